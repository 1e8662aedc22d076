package flyteimport

import (
	"fmt"
	"strings"
)

// scope is where an entry goes in our store: the parts Flyte joined into one
// stored key, kept apart again.
type scope struct {
	Project, Domain, Key string
}

// splitRules are the operator's facts that may decide a split the stored key
// alone leaves open. Empty sets allow anything.
type splitRules struct {
	// Projects, when not empty, are the only projects a split may name.
	Projects map[string]bool
	// Domains, when not empty, are the only domains a split may name.
	Domains map[string]bool
}

func (r splitRules) allows(s scope) bool {
	return (len(r.Projects) == 0 || r.Projects[s.Project]) && (len(r.Domains) == 0 || r.Domains[s.Domain])
}

// splitError says why a stored key could not be read as one scope.
type splitError struct {
	reason Reason
	detail string
}

func (e *splitError) Error() string { return e.detail }

// scopeFromSource reads the stored key with the project and domain the
// row's metadata names: Flyte's service stored project + "-" + domain + "-" +
// key, so the key is what follows that prefix. It reports false when the
// metadata does not name both, or names a prefix the stored key does not
// have, or a project or domain the rules exclude (the metadata then says
// nothing about where the row belongs, and the key alone must).
//
// The metadata names the task's own identifier, which need not be the scope
// the task ran in: source ml/dev on stored key ml-dev-production-k may be a
// task of ml/dev run in ml-dev/production. So the metadata's reading is
// taken only when no other reading of the key is as well supported: when it
// is the only reading whose project is in --projects (or, without
// --projects, is the metadata's project) and whose domain is in --domains
// (or, without --domains, is the metadata's domain). Otherwise the row is
// ambiguous_key. Without either list the metadata decides; with both, every
// reading the operator's lists allow competes.
func scopeFromSource(stored, project, domain string, rules splitRules) (scope, bool, error) {
	if project == "" || domain == "" {
		return scope{}, false, nil
	}
	key, ok := strings.CutPrefix(stored, project+"-"+domain+"-")
	if !ok || key == "" {
		return scope{}, false, nil
	}
	s := scope{Project: project, Domain: domain, Key: key}
	if !rules.allows(s) {
		return scope{}, false, nil
	}
	effective := rules
	if len(effective.Projects) == 0 {
		effective.Projects = map[string]bool{project: true}
	}
	if len(effective.Domains) == 0 {
		effective.Domains = map[string]bool{domain: true}
	}
	for _, r := range readings(stored) {
		if r != s && effective.allows(r) {
			return scope{}, false, &splitError{reason: ReasonAmbiguousKey, detail: fmt.Sprintf(
				"the metadata reads the key as %s, but %s is allowed by --projects and --domains too", s, r)}
		}
	}
	return s, true, nil
}

// readings is every way to cut stored at two of its dashes into three
// non-empty parts.
func readings(stored string) []scope {
	var out []scope
	for i := range len(stored) {
		if stored[i] != '-' || i == 0 {
			continue
		}
		for j := i + 2; j < len(stored)-1; j++ {
			if stored[j] == '-' {
				out = append(out, scope{Project: stored[:i], Domain: stored[i+1 : j], Key: stored[j+1:]})
			}
		}
	}
	return out
}

// scopeFromKey reads a stored key with no metadata to decide it: every way to
// cut it at two of its dashes into three non-empty parts is a candidate, the
// rules drop the candidates they exclude, and exactly one must remain. With
// dashes inside a project, domain or key, several do; then nothing is
// guessed.
func scopeFromKey(stored string, rules splitRules) (scope, error) {
	var found []scope
	candidates := readings(stored)
	for _, s := range candidates {
		if !rules.allows(s) {
			continue
		}
		found = append(found, s)
		if len(found) > 1 {
			return scope{}, &splitError{reason: ReasonAmbiguousKey, detail: fmt.Sprintf(
				"no metadata places the row, and the key reads as more than one project-domain-key, such as %s and %s",
				found[0], found[1])}
		}
	}
	switch {
	case len(found) == 1:
		return found[0], nil
	case len(candidates) == 0:
		return scope{}, &splitError{reason: ReasonUnsplittableKey, detail: "no metadata places the row, and the key is not project-domain-key"}
	default:
		return scope{}, &splitError{reason: ReasonUnsplittableKey, detail: fmt.Sprintf(
			"no metadata places the row, and none of the key's %d readings as project-domain-key names a project and domain allowed by --projects and --domains",
			len(candidates))}
	}
}

// String shows a scope in a report line without ambiguity.
func (s scope) String() string {
	return fmt.Sprintf("(project %q, domain %q, key %q)", s.Project, s.Domain, s.Key)
}
