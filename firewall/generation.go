package firewall

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// The kernel counts committed nftables transactions per network namespace
// (the ruleset generation, NFT_MSG_GETGEN): any change to any table, by
// anyone, moves it on; listings and counters do not. While it stays where
// it was right after the adapter's own last write and listing, the table
// is as the adapter wrote it, and a resync need not list it. On a host
// where other programs commit nftables changes often (kube-proxy), the
// generation moves and the resync lists the table as before.

// generation returns the ruleset generation of the calling thread's
// network namespace.
type generation func() (uint32, error)

// kernelGeneration asks the kernel over netlink.
func kernelGeneration() (uint32, error) {
	req := nl.NewNetlinkRequest(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_GETGEN, 0)
	req.AddData(nfgenmsg{})
	msgs, err := req.Execute(unix.NETLINK_NETFILTER, 0)
	if err != nil {
		return 0, fmt.Errorf("get nftables generation: %w", err)
	}
	for _, m := range msgs {
		if len(m) < 4 {
			continue
		}
		attrs, err := nl.ParseRouteAttr(m[4:])
		if err != nil {
			return 0, fmt.Errorf("get nftables generation: %w", err)
		}
		for _, a := range attrs {
			if a.Attr.Type == unix.NFTA_GEN_ID && len(a.Value) == 4 {
				return binary.BigEndian.Uint32(a.Value), nil
			}
		}
	}
	return 0, errors.New("get nftables generation: no generation id in the kernel's answer")
}

// nfgenmsg is the nfnetlink header of the request: any family, version 0,
// resource id 0.
type nfgenmsg struct{}

func (nfgenmsg) Len() int          { return 4 }
func (nfgenmsg) Serialize() []byte { return []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0} }
