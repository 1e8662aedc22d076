package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// checkedValue wraps a flag's Value while the command line and the
// environment are read, so that a bad value is answered in words a person
// can act on ("--db-timeout: \"5\" needs a unit, such as 5s") instead of
// the flag package's "parse error" or slog's own message. It is removed
// again before -help prints the flags, whose type names the flag package
// reads from the original Values.
type checkedValue struct {
	flag.Value
	name string
	bad  *badValue // where the first bad value is recorded
}

// badValue is the first value a flag refused.
type badValue struct {
	flag string
	err  error
}

func (v *checkedValue) Set(s string) error {
	err := v.Value.Set(s)
	if err == nil {
		return nil
	}
	err = explainValue(v.Value, s, err)
	if v.bad.err == nil {
		*v.bad = badValue{flag: v.name, err: err}
	}
	return err
}

// IsBoolFlag keeps "--pprof" (without a value) working for bool flags.
func (v *checkedValue) IsBoolFlag() bool {
	b, ok := v.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// explainValue says what is wrong with s for a flag of value's type. Our
// own Value types (byte sizes, origins) already say it; the flag package's
// and slog's do not.
func explainValue(value flag.Value, s string, err error) error {
	getter, ok := value.(flag.Getter)
	if !ok {
		return err
	}
	switch getter.Get().(type) {
	case time.Duration:
		if _, numErr := strconv.ParseFloat(s, 64); numErr == nil {
			return fmt.Errorf("%q needs a unit, such as %ss (units: ns, us, ms, s, m, h)", s, s)
		}
		return fmt.Errorf("%q is not a duration: want a number with a unit, such as 5s, 250ms or 1m30s", s)
	case slog.Level, *slog.Level: // flag.TextVar's Get returns the pointer
		return fmt.Errorf("%q is not a log level: want debug, info, warn or error", s)
	case bool:
		return fmt.Errorf("%q is not a boolean: want true or false", s)
	case int, int64, uint, uint64:
		return fmt.Errorf("%q is not a whole number", s)
	case float64:
		return fmt.Errorf("%q is not a number", s)
	}
	return err
}

// checkValues wraps every flag of fs in a checkedValue and returns where the
// first bad value is recorded and a function that unwraps them again.
func checkValues(fs *flag.FlagSet) (*badValue, func()) {
	bad := &badValue{}
	fs.VisitAll(func(f *flag.Flag) { f.Value = &checkedValue{Value: f.Value, name: f.Name, bad: bad} })
	return bad, func() {
		fs.VisitAll(func(f *flag.Flag) {
			if c, ok := f.Value.(*checkedValue); ok {
				f.Value = c.Value
			}
		})
	}
}

// parseError rewrites an error of fs.Parse in one line naming the flag:
// a refused value as "--flag: what is wrong", the flag package's own
// errors (an unknown flag, a missing value) with the double dash the README
// and -help use.
func parseError(err error, bad *badValue) error {
	if bad.err != nil {
		return fmt.Errorf("--%s: %w", bad.flag, bad.err)
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		return fmt.Errorf("unknown flag --%s", name)
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		return fmt.Errorf("--%s needs a value", name)
	}
	return errors.New(msg)
}
