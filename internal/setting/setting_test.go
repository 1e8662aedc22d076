package setting

import (
	"errors"
	"fmt"
	"testing"
)

// TestDescribeNamesEveryField: the subject and each field mentioned in
// braces are named by the caller's functions, and only those in braces.
func TestDescribeNamesEveryField(t *testing.T) {
	e := &Error{Field: "LockTimeout", Problem: "must be below {Timeout} (5s), got {x} 6s"}
	got := e.Describe(func(f string) string { return "--" + f }, func(f string) string { return "<" + f + ">" })
	if want := "--LockTimeout must be below <Timeout> (5s), got <x> 6s"; got != want {
		t.Errorf("Describe = %q, want %q", got, want)
	}
	if want := "LockTimeout must be below Timeout (5s), got x 6s"; e.Error() != want {
		t.Errorf("Error = %q, want %q", e.Error(), want)
	}
}

// TestFoundInJoined: a setting error is found with errors.As through
// errors.Join and wrapping, as cmd finds it.
func TestFoundInJoined(t *testing.T) {
	err := errors.Join(errors.New("other"), fmt.Errorf("wrapped: %w", &Error{Field: "F", Problem: "bad"}))
	var se *Error
	if !errors.As(err, &se) || se.Field != "F" {
		t.Fatalf("errors.As(%v) = %v, want the setting error of F", err, se)
	}
}
