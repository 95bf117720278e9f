package netlinksafe_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/romana/romana/netlinksafe"
	"github.com/romana/romana/sim/simtest"
)

func TestRetry(t *testing.T) {
	boom := errors.New("boom")
	for _, c := range []struct {
		name      string
		results   []error // what each call returns; the last repeats
		wantCalls int
		wantErr   error
		wantValue int
	}{
		{"first try", []error{nil}, 1, nil, 1},
		{"interrupted twice", []error{netlink.ErrDumpInterrupted, netlink.ErrDumpInterrupted, nil}, 3, nil, 3},
		{"always interrupted", []error{netlink.ErrDumpInterrupted}, netlinksafe.Attempts, netlink.ErrDumpInterrupted, 0},
		{"another error", []error{boom}, 1, boom, 1},
	} {
		calls := 0
		v, err := netlinksafe.Retry("dump", func() (int, error) {
			calls++
			return calls, c.results[min(calls, len(c.results))-1]
		})
		if calls != c.wantCalls || !errors.Is(err, c.wantErr) || (c.wantErr == nil) != (err == nil) || v != c.wantValue {
			t.Errorf("%s: %d calls, %d, %v; want %d calls, %d, %v", c.name, calls, v, err, c.wantCalls, c.wantValue, c.wantErr)
		}
	}
}

// An address dump while another handle adds and deletes an address: the
// raw dump is sometimes interrupted (and then may lack stable addresses);
// the wrapped one either returns every stable address or an error that says
// it was interrupted.
func TestAddrDumpUnderChurn(t *testing.T) {
	simtest.Require(t)
	ctx := context.Background()
	lab := simtest.New(t)
	ns, err := lab.AddNamespace(ctx, "nls")
	if err != nil {
		t.Fatal(err)
	}
	handle := func() *netlink.Handle {
		h, err := ns.Handle()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(h.Close)
		return h
	}
	raw, churner := handle(), handle()
	safe := netlinksafe.Handle{Handle: raw}
	if err := raw.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "d0"}, PeerName: "d1"}); err != nil {
		t.Fatal(err)
	}
	link := func(name string) netlink.Link {
		l, err := safe.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	d0, d1 := link("d0"), link("d1")
	addr := func(a netip.Addr) *netlink.Addr {
		return &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)}}
	}
	const stable = 2000
	for i := range stable {
		if err := raw.AddrAdd(d0, addr(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}))); err != nil {
			t.Fatal(err)
		}
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		a := addr(netip.MustParseAddr("10.2.0.1"))
		for {
			select {
			case <-stop:
				return
			default:
			}
			churner.AddrAdd(d1, a)
			churner.AddrDel(d1, a)
		}
	})
	defer wg.Wait()
	defer close(stop)

	countStable := func(as []netlink.Addr) int {
		n := 0
		for _, a := range as {
			if ip := a.IP.To4(); ip != nil && ip[0] == 10 && ip[1] == 1 {
				n++
			}
		}
		return n
	}
	var rawInterrupted, rawIncomplete, safeOK, safeInterrupted int
	for range 100 {
		as, err := raw.AddrList(nil, netlink.FAMILY_V4)
		switch {
		case errors.Is(err, netlink.ErrDumpInterrupted):
			rawInterrupted++
			if countStable(as) != stable {
				rawIncomplete++
			}
		case err != nil:
			t.Fatal(err)
		}
		as, err = safe.AddrList(nil, netlink.FAMILY_V4)
		switch {
		case err == nil:
			safeOK++
			if n := countStable(as); n != stable {
				t.Fatalf("a dump that succeeded has %d of the %d stable addresses", n, stable)
			}
		case errors.Is(err, netlink.ErrDumpInterrupted):
			safeInterrupted++
			if as != nil {
				t.Fatalf("an interrupted dump returned %d addresses with its error", len(as))
			}
		default:
			t.Fatal(err)
		}
	}
	t.Logf("100 dumps each: raw interrupted %d (%d lacking stable addresses); wrapped complete %d, interrupted %d times in a row %d",
		rawInterrupted, rawIncomplete, safeOK, netlinksafe.Attempts, safeInterrupted)
}
