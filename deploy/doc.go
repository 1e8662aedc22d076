// Package deploy holds what a platform team deploys: the container image (Dockerfile), the
// Kubernetes manifests (kubernetes/) and the systemd unit (systemd/). It has no code; its tests
// check that these files parse, name probes, ports and flags the server has, and that the static
// binary the image ships starts and serves in an otherwise empty root filesystem.
package deploy
