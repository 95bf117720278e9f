package route

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"time"
)

// Pinger health-checks addresses with one ICMP echo each, from a raw
// socket in the calling process's network namespace (root needed).
type Pinger struct {
	// Timeout bounds one probe (default 500ms).
	Timeout time.Duration
}

// Probe sends an echo request to ip (ICMP for IPv4, ICMPv6 for IPv6) and
// waits for the reply.
func (p Pinger) Probe(ctx context.Context, ip netip.Addr) error {
	ip = ip.Unmap()
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = 500 * time.Millisecond
	}
	// The kernel strips the IPv4 header on reading, and computes the
	// ICMPv6 checksum (it covers a pseudo-header) on sending.
	network, laddr, request, reply := "ip4:icmp", "0.0.0.0", byte(8), byte(0)
	if ip.Is6() {
		network, laddr, request, reply = "ip6:ipv6-icmp", "::", 128, 129
	}
	c, err := net.ListenPacket(network, laddr)
	if err != nil {
		return fmt.Errorf("probe %s: open icmp socket: %w", ip, err)
	}
	defer c.Close()
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	c.SetDeadline(deadline)
	id, seq := uint16(rand.N(1<<16)), uint16(rand.N(1<<16))
	msg := []byte{request, 0, 0, 0, byte(id >> 8), byte(id), byte(seq >> 8), byte(seq), 'r', 'o', 'm', 'a', 'n', 'a'}
	if ip.Is4() {
		binary.BigEndian.PutUint16(msg[2:], checksum(msg))
	}
	if _, err := c.WriteTo(msg, &net.IPAddr{IP: ip.AsSlice(), Zone: ip.Zone()}); err != nil {
		return fmt.Errorf("probe %s: send echo: %w", ip, err)
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("probe %s: no echo reply: %w", ip, err)
		}
		fa, ok := from.(*net.IPAddr)
		if !ok || !fa.IP.Equal(ip.AsSlice()) || n < 8 {
			continue
		}
		if buf[0] == reply && binary.BigEndian.Uint16(buf[4:]) == id && binary.BigEndian.Uint16(buf[6:]) == seq {
			return nil
		}
	}
}

func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}
