package cli

// Messages in the user's terms: flag values that do not parse, addresses and
// CIDRs, and JSON/YAML files (with the line and column of what is wrong)
// are reported without Go's function and type names.

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strings"

	"github.com/spf13/pflag"

	"github.com/romana/romana/plan"
)

// flagError rewrites pflag's "invalid argument" errors, whose cause names
// the Go function that failed (strconv.ParseUint, time.ParseDuration), into
// what the flag wants.
func flagError(err error) error {
	var iv *pflag.InvalidValueError
	if !errors.As(err, &iv) {
		return err
	}
	f, v := iv.GetFlag(), iv.GetValue()
	name := "--" + f.Name
	var want string
	switch t := f.Value.Type(); t {
	case "uint8", "uint16", "uint32", "uint64", "uint":
		bits := map[string]int{"uint8": 8, "uint16": 16, "uint32": 32}[t]
		if bits == 0 {
			want = "a whole number, 0 or more"
		} else {
			want = fmt.Sprintf("a whole number from 0 to %d", uint64(1)<<bits-1)
		}
	case "int", "int64":
		want = "a whole number"
	case "int32":
		want = fmt.Sprintf("a whole number from %d to %d", math.MinInt32, math.MaxInt32)
	case "duration":
		want = "a duration with a unit, e.g. 30s, 5m or 1h"
	case "bool":
		want = "true or false"
	default:
		return err // pflag's own message names no Go internals (e.g. key=value)
	}
	return fmt.Errorf("%s %q: want %s", name, v, want)
}

// parseAddrFlag parses an IP address given to flag (or, with flag "", as an
// argument); an error is a usage error in the user's terms.
func parseAddrFlag(flag, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		if flag == "" {
			return a, usagef("%q is not an IP address (%s)", s, plan.AddrReason(err))
		}
		return a, usagef("%s %q: not an IP address (%s)", flag, s, plan.AddrReason(err))
	}
	return a, nil
}

// parsePrefixFlag parses a CIDR given to flag; an error is a usage error.
func parsePrefixFlag(flag, s string) (netip.Prefix, error) {
	p, err := plan.ParsePrefix(s)
	if err != nil {
		return p, usagef("%s %q: %v", flag, s, err)
	}
	return p, nil
}
