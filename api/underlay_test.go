package api

import (
	"net/netip"
	"testing"
)

func TestUnderlayIP(t *testing.T) {
	a := netip.MustParseAddr
	for _, c := range []struct {
		h      Host
		v4, v6 string
	}{
		{Host{IP: a("192.168.1.11")}, "192.168.1.11", "invalid IP"},
		{Host{IP: a("192.168.1.11"), IP6: a("fd00:1::11")}, "192.168.1.11", "fd00:1::11"},
		{Host{IP: a("::ffff:192.168.1.11"), IP6: a("fd00:1::11")}, "192.168.1.11", "fd00:1::11"},
		{Host{IP: a("fd00:1::11")}, "invalid IP", "fd00:1::11"},
		{Host{}, "invalid IP", "invalid IP"},
	} {
		if got4, got6 := c.h.UnderlayIP(true).String(), c.h.UnderlayIP(false).String(); got4 != c.v4 || got6 != c.v6 {
			t.Errorf("%+v: UnderlayIP = %s, %s; want %s, %s", c.h, got4, got6, c.v4, c.v6)
		}
	}
}
