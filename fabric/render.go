package fabric

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/romana/romana/api"
)

// Output formats of Render.
const (
	FormatIP   = "ip"   // `ip route replace` commands (iproute2), a shell script
	FormatBird = "bird" // BIRD 2 static protocols, to include in bird.conf
	FormatFRR  = "frr"  // FRR static routes, as in vtysh `configure terminal`
)

// Formats lists the output formats, in the order help texts show them.
var Formats = []string{FormatIP, FormatBird, FormatFRR}

// Render writes the table's routes in one of Formats. The output is
// stable: equal tables render equal text.
func Render(t Table, format string) (string, error) {
	switch format {
	case FormatIP:
		return RenderIP(t), nil
	case FormatBird:
		return RenderBird(t), nil
	case FormatFRR:
		return RenderFRR(t), nil
	}
	return "", fmt.Errorf("format %q: use one of %s", format, strings.Join(Formats, ", "))
}

func header(t Table) string {
	what := t.Kind
	if t.Group != "" {
		what += ", group " + t.Group
	}
	ecmp := ""
	if n := t.ECMPRoutes(); n > 0 {
		ecmp = fmt.Sprintf(" (%d ECMP)", n)
	}
	return fmt.Sprintf("romana fabric routes for device %s (%s): %d route(s)%s", t.Device, what, len(t.Routes), ecmp)
}

// RenderIP renders `ip route replace` commands tagged "proto static"; an
// ECMP route is one command with a nexthop per path.
func RenderIP(t Table) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n", header(t))
	for _, r := range t.Routes {
		b.WriteString("ip route replace " + r.Dst.String() + " proto static")
		if len(r.Via) == 1 {
			b.WriteString(" via " + r.Via[0].String())
		} else {
			for _, v := range r.Via {
				b.WriteString(" nexthop via " + v.String())
			}
		}
		fmt.Fprintf(&b, "  # %s\n", r.Note)
	}
	return b.String()
}

// RenderBird renders one BIRD 2 static protocol per address family
// (romana_static4, romana_static6); an ECMP route lists every "via".
func RenderBird(t Table) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n", header(t))
	for _, fam := range []struct {
		is4  bool
		name string
	}{{true, "ipv4"}, {false, "ipv6"}} {
		var rs []Route
		for _, r := range t.Routes {
			if r.Dst.Addr().Is4() == fam.is4 {
				rs = append(rs, r)
			}
		}
		if len(rs) == 0 {
			continue
		}
		fmt.Fprintf(&b, "protocol static romana_static%s {\n\t%s;\n", fam.name[3:], fam.name)
		for _, r := range rs {
			fmt.Fprintf(&b, "\troute %s", r.Dst)
			for _, v := range r.Via {
				fmt.Fprintf(&b, " via %s", v)
			}
			fmt.Fprintf(&b, "; # %s\n", r.Note)
		}
		b.WriteString("}\n")
	}
	return b.String()
}

// RenderFRR renders FRR static routes ("ip route" / "ipv6 route"); an ECMP
// route is one line per next hop, which FRR installs as one multipath route.
func RenderFRR(t Table) string {
	var b strings.Builder
	fmt.Fprintf(&b, "! %s\n", header(t))
	for _, r := range t.Routes {
		fmt.Fprintf(&b, "! %s\n", r.Note)
		for _, v := range r.Via {
			fmt.Fprintf(&b, "%s %s %s\n", frrCmd(r.Dst), r.Dst, v)
		}
	}
	return b.String()
}

func frrCmd(p netip.Prefix) string {
	if p.Addr().Is4() {
		return "ip route"
	}
	return "ipv6 route"
}

// Wire returns the table as the API sends it.
func (t Table) Wire() api.FabricRoutes {
	out := api.FabricRoutes{Device: t.Device, Kind: t.Kind, Group: t.Group, Routes: []api.FabricRoute{},
		Announce: t.Announce, Problems: t.Problems}
	for _, r := range t.Routes {
		out.Routes = append(out.Routes, api.FabricRoute{Dst: r.Dst, Via: r.Via, Note: r.Note})
	}
	return out
}

// FromWire is the inverse of Wire.
func FromWire(w api.FabricRoutes) Table {
	t := Table{Device: w.Device, Kind: w.Kind, Group: w.Group, Announce: w.Announce, Problems: w.Problems}
	for _, r := range w.Routes {
		t.Routes = append(t.Routes, Route{Dst: r.Dst, Via: r.Via, Note: r.Note})
	}
	return t
}
