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
// have (the metadata then says nothing about where the row belongs).
func scopeFromSource(stored, project, domain string) (scope, bool) {
	if project == "" || domain == "" {
		return scope{}, false
	}
	key, ok := strings.CutPrefix(stored, project+"-"+domain+"-")
	if !ok || key == "" {
		return scope{}, false
	}
	return scope{Project: project, Domain: domain, Key: key}, true
}

// scopeFromKey reads a stored key with no metadata to decide it: every way to
// cut it at two of its dashes into three non-empty parts is a candidate, the
// rules drop the candidates they exclude, and exactly one must remain. With
// dashes inside a project, domain or key, several do; then nothing is
// guessed.
func scopeFromKey(stored string, rules splitRules) (scope, error) {
	var found []scope
	candidates := 0
	for i := range len(stored) {
		if stored[i] != '-' || i == 0 {
			continue
		}
		for j := i + 2; j < len(stored)-1; j++ {
			if stored[j] != '-' {
				continue
			}
			candidates++
			s := scope{Project: stored[:i], Domain: stored[i+1 : j], Key: stored[j+1:]}
			if !rules.allows(s) {
				continue
			}
			found = append(found, s)
			if len(found) > 1 {
				return scope{}, &splitError{reason: ReasonAmbiguousKey, detail: fmt.Sprintf(
					"no metadata, and the key reads as more than one project-domain-key, such as %s and %s",
					found[0], found[1])}
			}
		}
	}
	switch {
	case len(found) == 1:
		return found[0], nil
	case candidates == 0:
		return scope{}, &splitError{reason: ReasonUnsplittableKey, detail: "no metadata, and the key is not project-domain-key"}
	default:
		return scope{}, &splitError{reason: ReasonUnsplittableKey, detail: fmt.Sprintf(
			"no metadata, and none of the key's %d readings as project-domain-key names a project and domain allowed by --projects and --domains",
			candidates)}
	}
}

// String shows a scope in a report line without ambiguity.
func (s scope) String() string {
	return fmt.Sprintf("(project %q, domain %q, key %q)", s.Project, s.Domain, s.Key)
}
