package bgp

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// tcpExt returns the named counter of the TcpExt section of a
// /proc/net/netstat listing (a line of names, then a line of values).
func tcpExt(netstat, name string) (uint64, error) {
	var names []string
	for _, line := range strings.Split(netstat, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "TcpExt:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == name && i < len(f) {
				return strconv.ParseUint(f[i], 10, 64)
			}
		}
		return 0, fmt.Errorf("netstat has no TcpExt counter %s", name)
	}
	return 0, fmt.Errorf("netstat has no TcpExt section")
}

// md5Refused reads the kernel's count of TCP segments dropped because
// their MD5 signature (RFC 2385) did not verify: what a listener with a
// password does to a connection attempt signed with another one. The
// count is per network namespace; read returns that namespace's
// /proc/net/netstat.
func md5Refused(t testing.TB, read func() (string, error)) uint64 {
	t.Helper()
	s, err := read()
	if err != nil {
		t.Fatal(err)
	}
	n, err := tcpExt(s, "TCPMD5Failure")
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestTCPExt(t *testing.T) {
	s := "TcpExt: SyncookiesSent TCPMD5NotFound TCPMD5Unexpected TCPMD5Failure\nTcpExt: 0 1 2 37\nIpExt: InNoRoutes\nIpExt: 5\n"
	if n, err := tcpExt(s, "TCPMD5Failure"); err != nil || n != 37 {
		t.Fatalf("TCPMD5Failure = %d, %v; want 37", n, err)
	}
	if _, err := tcpExt(s, "Nope"); err == nil {
		t.Fatal("a missing counter was found")
	}
}
