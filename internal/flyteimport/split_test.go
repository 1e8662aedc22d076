package flyteimport

import (
	"errors"
	"testing"
)

func TestScopeFromSourceStripsTheProjectDomainPrefix(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, stored, project, domain string
		want                          scope
		ok                            bool
	}{
		{"plain", "flytesnacks-development-abc", "flytesnacks", "development",
			scope{"flytesnacks", "development", "abc"}, true},
		{"dashes everywhere", "ml-team-dev-eu-h1-h2-h3-v1", "ml-team", "dev-eu",
			scope{"ml-team", "dev-eu", "h1-h2-h3-v1"}, true},
		// The same stored key read with other metadata: the metadata decides.
		{"dashes everywhere, other reading", "ml-team-dev-eu-h1-h2-h3-v1", "ml", "team-dev",
			scope{"ml", "team-dev", "eu-h1-h2-h3-v1"}, true},
		{"key may start with a dash", "p-d--x", "p", "d", scope{"p", "d", "-x"}, true},
		{"prefix missing", "other-development-abc", "flytesnacks", "development", scope{}, false},
		{"nothing after the prefix", "p-d-", "p", "d", scope{}, false},
		{"no project", "p-d-k", "", "d", scope{}, false},
		{"no domain", "p-d-k", "p", "", scope{}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok, err := scopeFromSource(c.stored, c.project, c.domain, splitRules{})
			if err != nil {
				t.Fatal(err)
			}
			if ok != c.ok || got != c.want {
				t.Fatalf("scopeFromSource(%q, %q, %q) = %v, %v; want %v, %v", c.stored, c.project, c.domain, got, ok, c.want, c.ok)
			}
		})
	}
}

func TestScopeFromKeyTakesOnlyTheOneReading(t *testing.T) {
	t.Parallel()
	set := func(s ...string) map[string]bool {
		m := map[string]bool{}
		for _, v := range s {
			m[v] = true
		}
		return m
	}
	cases := []struct {
		name   string
		stored string
		rules  splitRules
		want   scope
		reason Reason // empty: want succeeds
	}{
		{"exactly two dashes", "p-d-k", splitRules{}, scope{"p", "d", "k"}, ""},
		{"multi-byte parts", "prøject-dömain-kéy", splitRules{}, scope{"prøject", "dömain", "kéy"}, ""},
		{"three dashes are two readings", "p-d-k-1", splitRules{}, scope{}, ReasonAmbiguousKey},
		{"dash in the project is ambiguous too", "my-proj-d-k", splitRules{}, scope{}, ReasonAmbiguousKey},
		{"domains decide", "my-proj-development-h1-h2", splitRules{Domains: set("development", "production")},
			scope{"my-proj", "development", "h1-h2"}, ""},
		{"projects decide", "my-proj-dev-h1", splitRules{Projects: set("my-proj")},
			scope{"my-proj", "dev", "h1"}, ""},
		{"projects alone leave the domain open", "my-proj-development-h1-h2", splitRules{Projects: set("my-proj")},
			scope{}, ReasonAmbiguousKey},
		{"domain repeated in the key stays ambiguous", "p-development-x-development-y",
			splitRules{Domains: set("development")}, scope{}, ReasonAmbiguousKey},
		{"both rules together", "p-development-x-development-y",
			splitRules{Projects: set("p"), Domains: set("development")}, scope{"p", "development", "x-development-y"}, ""},
		{"rules exclude every reading", "a-b-c-d", splitRules{Domains: set("production")}, scope{}, ReasonUnsplittableKey},
		{"one dash", "p-k", splitRules{}, scope{}, ReasonUnsplittableKey},
		{"no dash", "key", splitRules{}, scope{}, ReasonUnsplittableKey},
		{"empty part", "p--k", splitRules{}, scope{}, ReasonUnsplittableKey},
		{"leading dash belongs to the project", "-p-d-k", splitRules{}, scope{"-p", "d", "k"}, ""},
		{"trailing dash", "p-d-", splitRules{}, scope{}, ReasonUnsplittableKey},
		{"empty", "", splitRules{}, scope{}, ReasonUnsplittableKey},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := scopeFromKey(c.stored, c.rules)
			if c.reason == "" {
				if err != nil || got != c.want {
					t.Fatalf("scopeFromKey(%q) = %v, %v; want %v", c.stored, got, err, c.want)
				}
				return
			}
			var se *splitError
			if !errors.As(err, &se) || se.reason != c.reason {
				t.Fatalf("scopeFromKey(%q) = %v, %v; want a %s error", c.stored, got, err, c.reason)
			}
		})
	}
}

// Every candidate the search reports must rebuild the stored key; checked over
// every key of up to six characters drawn from "a-".
func TestScopeFromKeyReadingsRebuildTheKey(t *testing.T) {
	t.Parallel()
	var keys []string
	var grow func(prefix string)
	grow = func(prefix string) {
		keys = append(keys, prefix)
		if len(prefix) < 6 {
			grow(prefix + "a")
			grow(prefix + "-")
		}
	}
	grow("")
	for _, k := range keys {
		s, err := scopeFromKey(k, splitRules{})
		if err != nil {
			if countReadings(k) == 1 {
				t.Errorf("scopeFromKey(%q) = %v, but the key has exactly one reading", k, err)
			}
			continue
		}
		if s.Project == "" || s.Domain == "" || s.Key == "" || s.Project+"-"+s.Domain+"-"+s.Key != k {
			t.Errorf("scopeFromKey(%q) = %v: does not rebuild the key", k, s)
		}
		if got := countReadings(k); got != 1 {
			t.Errorf("scopeFromKey(%q) succeeded, but the key has %d readings", k, got)
		}
	}
}

// countReadings counts the ways to cut s into three non-empty parts at two
// dashes, the slow way.
func countReadings(s string) int {
	n := 0
	for i := 1; i < len(s); i++ {
		for j := i + 1; j < len(s); j++ {
			if s[i] == '-' && s[j] == '-' && i > 0 && j > i+1 && j < len(s)-1 {
				n++
			}
		}
	}
	return n
}
