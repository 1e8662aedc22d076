// Package setting reports a configuration value out of its bounds by the
// name of its Go field, so that the packages that validate a Config (store,
// manager) know nothing of how a front end spells it: cmd maps fields to
// flags and environment variables, a test or another front end may name
// them differently.
package setting

import (
	"regexp"
	"strings"
)

// Error is one field out of its bounds.
type Error struct {
	// Field is the Go name of the field in its package's Config.
	Field string
	// Problem says what is wrong, in a phrase that follows the field's
	// name. Another field of the same Config it mentions is written
	// {Field}, so that it is named the same way as Field.
	Problem string
}

// Error names fields by their Go names.
func (e *Error) Error() string {
	goName := func(f string) string { return f }
	return e.Describe(goName, goName)
}

// Describe writes the error with Field named by name and the fields in
// braces in Problem by mention (a message may name its subject more fully,
// with its environment variable, than the fields it mentions).
func (e *Error) Describe(name, mention func(field string) string) string {
	return name(e.Field) + " " + fieldRef.ReplaceAllStringFunc(e.Problem, func(ref string) string {
		return mention(strings.Trim(ref, "{}"))
	})
}

var fieldRef = regexp.MustCompile(`\{[A-Za-z][A-Za-z0-9]*\}`)
