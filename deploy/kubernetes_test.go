package deploy_test

import (
	"errors"
	"io"
	"io/fs"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// Kubernetes objects, reduced to the fields the tests check.

type objectMeta struct {
	Name   string            `yaml:"name"`
	Labels map[string]string `yaml:"labels"`
}

type manifest struct {
	file       string
	APIVersion string     `yaml:"apiVersion"`
	Kind       string     `yaml:"kind"`
	Metadata   objectMeta `yaml:"metadata"`
	Spec       yaml.Node  `yaml:"spec"`
	Resources  []string   `yaml:"resources"` // Kustomization
}

type labelSelector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

type deploymentSpec struct {
	Selector labelSelector `yaml:"selector"`
	Template struct {
		Metadata objectMeta `yaml:"metadata"`
		Spec     podSpec    `yaml:"spec"`
	} `yaml:"template"`
}

type podSpec struct {
	SecurityContext struct {
		RunAsNonRoot *bool `yaml:"runAsNonRoot"`
		RunAsUser    *int  `yaml:"runAsUser"`
	} `yaml:"securityContext"`
	Containers []container `yaml:"containers"`
	Volumes    []struct {
		Name   string `yaml:"name"`
		Secret *struct {
			SecretName string `yaml:"secretName"`
		} `yaml:"secret"`
	} `yaml:"volumes"`
}

type container struct {
	Name    string   `yaml:"name"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Env     []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			SecretKeyRef *struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	StartupProbe   *probe `yaml:"startupProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		SubPath   string `yaml:"subPath"`
	} `yaml:"volumeMounts"`
}

type probe struct {
	HTTPGet *struct {
		Path   string `yaml:"path"`
		Port   any    `yaml:"port"`
		Scheme string `yaml:"scheme"`
	} `yaml:"httpGet"`
}

// manifests parses every YAML document under kubernetes/.
func manifests(t *testing.T) []manifest {
	t.Helper()
	var all []manifest
	err := filepath.WalkDir("kubernetes", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !(strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		dec := yaml.NewDecoder(f)
		for i := 0; ; i++ {
			var node yaml.Node
			if err := dec.Decode(&node); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Errorf("%s: document %d: %v", path, i+1, err)
				break
			}
			m := manifest{file: path}
			if err := node.Decode(&m); err != nil {
				t.Errorf("%s: document %d: %v", path, i+1, err)
				continue
			}
			if m.APIVersion == "" || m.Kind == "" || (m.Metadata.Name == "" && m.Kind != "Kustomization") {
				t.Errorf("%s: document %d lacks apiVersion, kind or metadata.name", path, i+1)
			}
			all = append(all, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return all
}

func decodeSpec[T any](t *testing.T, m manifest) T {
	t.Helper()
	var spec T
	if err := m.Spec.Decode(&spec); err != nil {
		t.Fatalf("%s: %s %s: spec: %v", m.file, m.Kind, m.Metadata.Name, err)
	}
	return spec
}

type deployment struct {
	file string
	spec deploymentSpec
	pod  podSpec
}

func deployments(t *testing.T) []deployment {
	t.Helper()
	var ds []deployment
	for _, m := range manifests(t) {
		if m.Kind == "Deployment" {
			spec := decodeSpec[deploymentSpec](t, m)
			ds = append(ds, deployment{file: m.file, spec: spec, pod: spec.Template.Spec})
		}
	}
	if len(ds) == 0 {
		t.Fatal("no Deployment under kubernetes/")
	}
	return ds
}

// TestKustomizationListsEveryManifest: a manifest left out of kustomization.yaml is never
// applied, and one listed but missing breaks `kubectl apply -k`.
func TestKustomizationListsEveryManifest(t *testing.T) {
	t.Parallel()
	var listed []string
	files := map[string]bool{}
	for _, m := range manifests(t) {
		if m.Kind == "Kustomization" {
			for _, r := range m.Resources {
				listed = append(listed, filepath.Join(filepath.Dir(m.file), r))
			}
			continue
		}
		files[m.file] = true
	}
	if len(listed) == 0 {
		t.Fatal("no kustomization.yaml with resources under kubernetes/")
	}
	for _, l := range listed {
		if !files[l] {
			t.Errorf("kustomization.yaml lists %s, which holds no manifest", l)
		}
		delete(files, l)
	}
	for f := range files {
		t.Errorf("%s is not listed in kustomization.yaml's resources", f)
	}
}

// TestDeploymentProbesPortsAndHardening checks the pod a platform team runs: probes on /livez
// and /readyz through the container's named API port (the one --addr listens on), the metrics
// port where --metrics-addr listens, the database URL from a Secret, the auth and TLS files on
// Secret volumes mounted whole (so rotation reaches the pod), and the restricted security profile.
func TestDeploymentProbesPortsAndHardening(t *testing.T) {
	t.Parallel()
	for _, d := range deployments(t) {
		if len(d.pod.Containers) != 1 {
			t.Fatalf("%s: %d containers, want 1", d.file, len(d.pod.Containers))
		}
		c := d.pod.Containers[0]
		ports := map[string]int{}
		for _, p := range c.Ports {
			ports[p.Name] = p.ContainerPort
		}
		flags := map[string]string{}
		for _, u := range argFlags(d.file, c.Args) {
			flags[u.flag] = u.value
		}

		apiPort := checkProbe(t, d.file, "livenessProbe", c.LivenessProbe, "/livez", ports)
		if got := checkProbe(t, d.file, "readinessProbe", c.ReadinessProbe, "/readyz", ports); got != apiPort {
			t.Errorf("%s: readiness probes port %q, liveness %q: want both on the API port", d.file, got, apiPort)
		}
		if c.StartupProbe != nil {
			checkProbe(t, d.file, "startupProbe", c.StartupProbe, "/livez", ports)
		}
		if want := ports[apiPort]; portOf(t, flags["addr"]) != want {
			t.Errorf("%s: --addr=%s, but the probes' port %q is %d", d.file, flags["addr"], apiPort, want)
		}
		if want, ok := ports["metrics"]; !ok || portOf(t, flags["metrics-addr"]) != want {
			t.Errorf("%s: --metrics-addr=%s, want the container port named metrics (%d)", d.file, flags["metrics-addr"], want)
		}

		secretMounts := map[string]bool{} // mount paths of Secret volumes
		secretVolumes := map[string]bool{}
		for _, v := range d.pod.Volumes {
			if v.Secret != nil {
				secretVolumes[v.Name] = true
			}
		}
		for _, m := range c.VolumeMounts {
			if secretVolumes[m.Name] {
				if m.SubPath != "" {
					t.Errorf("%s: Secret volume %s mounted with subPath: the kubelet never updates those", d.file, m.Name)
				}
				secretMounts[m.MountPath] = true
			}
		}
		for _, f := range []string{"auth-file", "tls-cert-file", "tls-key-file"} {
			path, ok := flags[f]
			if !ok {
				t.Errorf("%s: no --%s", d.file, f)
				continue
			}
			if !secretMounts[filepath.Dir(path)] {
				t.Errorf("%s: --%s=%s is not in a mounted Secret volume (%v)", d.file, f, path, slices.Sorted(maps.Keys(secretMounts)))
			}
		}
		dbFromSecret := false
		for _, e := range c.Env {
			if e.Name == "CACHESERVICE_DATABASE_URL" {
				dbFromSecret = e.Value == "" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil
			}
		}
		if !dbFromSecret {
			t.Errorf("%s: CACHESERVICE_DATABASE_URL must come from a Secret (secretKeyRef)", d.file)
		}

		sc := c.SecurityContext
		nonRoot := (sc.RunAsNonRoot != nil && *sc.RunAsNonRoot) || (d.pod.SecurityContext.RunAsNonRoot != nil && *d.pod.SecurityContext.RunAsNonRoot)
		if !nonRoot {
			t.Errorf("%s: runAsNonRoot is not set", d.file)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("%s: readOnlyRootFilesystem is not true", d.file)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("%s: allowPrivilegeEscalation is not false", d.file)
		}
		if !slices.Contains(sc.Capabilities.Drop, "ALL") {
			t.Errorf("%s: capabilities.drop = %v, want ALL", d.file, sc.Capabilities.Drop)
		}
		if c.Resources.Requests["cpu"] == "" || c.Resources.Requests["memory"] == "" || c.Resources.Limits["memory"] == "" {
			t.Errorf("%s: resources = %+v, want cpu and memory requests and a memory limit", d.file, c.Resources)
		}
		if !matches(d.spec.Selector.MatchLabels, d.spec.Template.Metadata.Labels) {
			t.Errorf("%s: selector %v does not match the pod labels %v", d.file, d.spec.Selector.MatchLabels, d.spec.Template.Metadata.Labels)
		}
	}
}

// checkProbe checks an HTTP probe's path and that its port names a container port; it returns
// that name.
func checkProbe(t *testing.T, file, name string, p *probe, path string, ports map[string]int) string {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Errorf("%s: no %s with httpGet", file, name)
		return ""
	}
	if p.HTTPGet.Path != path {
		t.Errorf("%s: %s path %q, want %q", file, name, p.HTTPGet.Path, path)
	}
	port, ok := p.HTTPGet.Port.(string)
	if _, named := ports[port]; !ok || !named {
		t.Errorf("%s: %s port %v, want the name of a container port (%v)", file, name, p.HTTPGet.Port, slices.Sorted(maps.Keys(ports)))
	}
	return port
}

func portOf(t *testing.T, hostPort string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(hostPort)
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		return -1
	}
	return n
}

// matches reports whether every label of selector is on labels (and selector is not empty).
func matches(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// TestServicePDBAndNetworkPolicySelectThePods: a selector that misses the pods routes nothing,
// protects nothing or lets everything in; ports must name the container's ports.
func TestServicePDBAndNetworkPolicySelectThePods(t *testing.T) {
	t.Parallel()
	d := deployments(t)[0]
	podLabels := d.spec.Template.Metadata.Labels
	containerPorts := map[string]bool{}
	for _, p := range d.pod.Containers[0].Ports {
		containerPorts[p.Name] = true
	}
	seen := map[string]bool{}
	for _, m := range manifests(t) {
		switch m.Kind {
		case "Service":
			spec := decodeSpec[struct {
				Selector map[string]string `yaml:"selector"`
				Ports    []struct {
					Name       string `yaml:"name"`
					TargetPort any    `yaml:"targetPort"`
				} `yaml:"ports"`
			}](t, m)
			if !matches(spec.Selector, podLabels) {
				t.Errorf("%s: Service selector %v misses the pods %v", m.file, spec.Selector, podLabels)
			}
			targets := map[string]bool{}
			for _, p := range spec.Ports {
				name, ok := p.TargetPort.(string)
				if !ok || !containerPorts[name] {
					t.Errorf("%s: Service port %s targets %v, want a container port name", m.file, p.Name, p.TargetPort)
				}
				targets[name] = true
			}
			if !targets["api"] || !targets["metrics"] {
				t.Errorf("%s: Service targets %v, want the api and metrics ports", m.file, targets)
			}
		case "PodDisruptionBudget":
			spec := decodeSpec[struct {
				Selector labelSelector `yaml:"selector"`
			}](t, m)
			if !matches(spec.Selector.MatchLabels, podLabels) {
				t.Errorf("%s: PodDisruptionBudget selector %v misses the pods", m.file, spec.Selector.MatchLabels)
			}
		case "NetworkPolicy":
			spec := decodeSpec[struct {
				PodSelector labelSelector `yaml:"podSelector"`
				Ingress     []struct {
					Ports []struct {
						Port any `yaml:"port"`
					} `yaml:"ports"`
				} `yaml:"ingress"`
			}](t, m)
			if !matches(spec.PodSelector.MatchLabels, podLabels) {
				t.Errorf("%s: NetworkPolicy podSelector %v misses the pods", m.file, spec.PodSelector.MatchLabels)
			}
			for _, rule := range spec.Ingress {
				for _, p := range rule.Ports {
					if name, ok := p.Port.(string); !ok || !containerPorts[name] {
						t.Errorf("%s: ingress port %v, want a container port name", m.file, p.Port)
					}
				}
			}
		default:
			continue
		}
		seen[m.Kind] = true
	}
	for _, kind := range []string{"Service", "PodDisruptionBudget", "NetworkPolicy"} {
		if !seen[kind] {
			t.Errorf("no %s under kubernetes/", kind)
		}
	}
}
