package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	"github.com/romana/romana/api"
)

// ChainResult is the outcome of the chain scenario: the firewall's
// forwarded-packet counter after each round of traffic.
type ChainResult struct {
	Firewall string       `json:"firewall"` // the service function's address
	Chain    api.Chain    `json:"chain"`
	Rounds   []ChainRound `json:"rounds"`
	OK       bool         `json:"ok"`
	Problems []string     `json:"problems,omitempty"`
}

// ChainRound is one round of TCP connections and pings from the source
// segment to the target tenant.
type ChainRound struct {
	Phase     string `json:"phase"` // "direct", "chained", "removed"
	Reached   int    `json:"reached"`
	Probes    int    `json:"probes"`
	Forwarded int    `json:"forwarded"` // the firewall's counter after the round
	Delta     int    `json:"delta"`
}

// The chain scenario's objects: a target tenant open to all, and a
// firewall endpoint that forwards and counts packets.
var (
	chainTarget    = api.Tenant{Name: "public", Isolation: api.IsolationNone}
	chainInfra     = api.Tenant{Name: "infra", Isolation: api.IsolationNone}
	chainCounterRE = regexp.MustCompile(`counter packets (\d+)`)
)

// RunChain runs `romana demo --scenario chain`: the flat datacenter, plus
// tenant "public" (isolation none) with one endpoint on the last host and a
// firewall endpoint "fw" (tenant infra) on h1 that forwards and counts
// packets. acme/web's traffic to public first flows directly (the
// firewall's counter stands still), then through the chain "inspect"
// (--from acme/web --to public --via fw: the counter rises), then, with the
// chain removed, directly again (the counter stops, traffic still flows).
func RunChain(ctx context.Context, o Options) (res ChainResult, retErr error) {
	d, err := startFlat(ctx, o)
	if err != nil {
		return res, err
	}
	defer d.finish(&retErr)
	res, err = d.chainScenario(ctx)
	if d.o.JSON {
		enc := json.NewEncoder(d.o.Out)
		enc.SetIndent("", "  ")
		if jerr := enc.Encode(res); jerr != nil && err == nil {
			err = jerr
		}
	}
	return res, err
}

// inNS runs a command in the endpoint's namespace.
func inNS(ctx context.Context, e Endpoint, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", filepath.Base(e.NS)}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s in %s: %w: %s", args, e.Name, err, out)
	}
	return string(out), nil
}

func (d *run) chainScenario(ctx context.Context) (ChainResult, error) {
	var res ChainResult
	for _, t := range []api.Tenant{chainTarget, chainInfra} {
		if _, err := d.cli.AddTenant(ctx, t); err != nil {
			return res, err
		}
	}
	if _, err := d.cli.AddSegment(ctx, api.Segment{Tenant: chainTarget.Name, Name: "web"}); err != nil {
		return res, err
	}
	if _, err := d.cli.AddSegment(ctx, api.Segment{Tenant: chainInfra.Name, Name: "fw"}); err != nil {
		return res, err
	}
	last := fmt.Sprintf("h%d", d.o.Hosts)
	d.say("== service chain scenario: a firewall endpoint on h1, tenant %s (isolation none) on %s", chainTarget.Name, last)
	pub, err := d.attachEndpoint(ctx, "pub1", last, chainTarget.Name, "web")
	if err != nil {
		return res, err
	}
	fw, err := d.attachEndpoint(ctx, "fw", "h1", chainInfra.Name, "fw")
	if err != nil {
		return res, err
	}
	res.Firewall = fw.IP.String()
	// The firewall forwards and counts what it forwards.
	for _, kv := range []string{"net.ipv4.ip_forward=1", "net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.eth0.send_redirects=0"} {
		if _, err := inNS(ctx, fw, "sysctl", "-qw", kv); err != nil {
			return res, err
		}
	}
	script := filepath.Join(d.dir, "fw.nft")
	if err := os.WriteFile(script, []byte("table inet fw {\n\tchain forward {\n\t\ttype filter hook forward priority 0; policy accept;\n\t\tcounter\n\t}\n}\n"), 0o644); err != nil {
		return res, err
	}
	if _, err := inNS(ctx, fw, "nft", "-f", script); err != nil {
		return res, err
	}
	l, err := listenIn(pub.NS, netip.AddrPortFrom(pub.IP, ProbePort))
	if err != nil {
		return res, err
	}
	d.mu.Lock()
	d.lsns = append(d.lsns, l)
	d.mu.Unlock()
	go serve(l)

	var sources []Endpoint
	for _, e := range d.eps {
		if e.Tenant == "acme" && e.Segment == "web" {
			sources = append(sources, e)
		}
	}
	d.say("  firewall %s on h1; target %s (%s) on %s; sources acme/web: %d endpoints", fw.IP, pub.Name, pub.IP, last, len(sources))
	counter := func() (int, error) {
		out, err := inNS(ctx, fw, "nft", "list", "chain", "inet", "fw", "forward")
		if err != nil {
			return 0, err
		}
		m := chainCounterRE.FindStringSubmatch(out)
		if m == nil {
			return 0, fmt.Errorf("firewall counter missing:\n%s", out)
		}
		return strconv.Atoi(m[1])
	}
	// round sends a TCP connection and a ping from every source.
	round := func(phase string) (ChainRound, error) {
		before, err := counter()
		if err != nil {
			return ChainRound{}, err
		}
		r := ChainRound{Phase: phase}
		for _, s := range sources {
			r.Probes += 2
			if dialIn(s.NS, netip.AddrPortFrom(pub.IP, ProbePort), time.Second) == nil {
				r.Reached++
			}
			if pingIn(ctx, filepath.Base(s.NS), pub.IP, time.Second) {
				r.Reached++
			}
		}
		if r.Forwarded, err = counter(); err != nil {
			return r, err
		}
		r.Delta = r.Forwarded - before
		d.say("  %-8s %d/%d probes reached %s; firewall forwarded %4d packets (+%d)", phase, r.Reached, r.Probes, pub.Name, r.Forwarded, r.Delta)
		return r, nil
	}
	// Agents converge: every source reaches the target.
	d.say("\n== waiting for agents to converge")
	if err := waitFor(ctx, 60*time.Second, 300*time.Millisecond, func() error {
		for _, s := range sources {
			if err := dialIn(s.NS, netip.AddrPortFrom(pub.IP, ProbePort), time.Second); err != nil {
				return fmt.Errorf("%s -> %s: %w", s.Name, pub.Name, err)
			}
		}
		return nil
	}); err != nil {
		return res, fmt.Errorf("agents did not converge: %w\n%s", err, d.agentLogs())
	}
	check := func(r ChainRound, through bool) {
		switch {
		case r.Reached != r.Probes:
			res.Problems = append(res.Problems, fmt.Sprintf("%s: only %d of %d probes reached %s", r.Phase, r.Reached, r.Probes, pub.Name))
		case through && r.Delta < r.Probes:
			res.Problems = append(res.Problems, fmt.Sprintf("%s: the firewall forwarded %d packets, want >= %d", r.Phase, r.Delta, r.Probes))
		case !through && r.Delta != 0:
			res.Problems = append(res.Problems, fmt.Sprintf("%s: the firewall forwarded %d packets, want 0", r.Phase, r.Delta))
		}
		res.Rounds = append(res.Rounds, r)
	}

	d.say("\n== direct path (no chain)")
	for i := 0; i < 2; i++ {
		r, err := round("direct")
		if err != nil {
			return res, err
		}
		check(r, false)
	}

	ch := api.Chain{Name: "inspect", Tenant: "acme", Segment: "web", ToTenant: chainTarget.Name, Via: []netip.Addr{fw.IP}}
	if res.Chain, err = d.cli.AddChain(ctx, ch); err != nil {
		return res, err
	}
	d.say("\n== romana chain add inspect --from acme/web --to %s --via %s", chainTarget.Name, fw.IP)
	// Wait until the sources' hosts steer: a probe passes the firewall.
	if err := waitFor(ctx, 30*time.Second, 300*time.Millisecond, func() error {
		r, err := round("waiting")
		if err != nil {
			return err
		}
		if r.Delta == 0 {
			return errors.New("traffic does not pass the firewall yet")
		}
		return nil
	}); err != nil {
		return res, fmt.Errorf("chain not applied: %w\n%s", err, d.agentLogs())
	}
	for i := 0; i < 3; i++ {
		r, err := round("chained")
		if err != nil {
			return res, err
		}
		check(r, true)
	}

	if err := d.cli.RemoveChain(ctx, ch.Name); err != nil {
		return res, err
	}
	d.say("\n== romana chain remove inspect")
	if err := waitFor(ctx, 30*time.Second, 300*time.Millisecond, func() error {
		r, err := round("waiting")
		if err != nil {
			return err
		}
		if r.Delta != 0 {
			return errors.New("traffic still passes the firewall")
		}
		return nil
	}); err != nil {
		return res, fmt.Errorf("chain not removed: %w\n%s", err, d.agentLogs())
	}
	for i := 0; i < 2; i++ {
		r, err := round("removed")
		if err != nil {
			return res, err
		}
		check(r, false)
	}
	res.OK = len(res.Problems) == 0
	if !res.OK {
		return res, fmt.Errorf("chain scenario: %v", res.Problems)
	}
	d.say("\nPASS: the firewall's counter rose only while the chain was in place; traffic flowed in every phase")
	return res, nil
}
