package firewall

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/romana/romana/api"
)

// kernelPolicyCounters sums the counters of the policy rules in the
// chains of table inet <table> that stage(chain) gives a stage, read over
// netlink in the calling thread's network namespace: one dump of the
// chains, then one dump of the rules per selected chain (NFT_MSG_GETRULE
// filtered by table and chain in the kernel), all over one socket into
// one buffer, parsed where they lie. A missing table gives none.
//
// One dump per chain, because the kernel resumes a rule dump for each
// message buffer it fills by walking the table's rules from the start: a
// single dump of 50,000 rules costs seconds of system time, quadratic in
// the table's size, and one per chain only the chain's own rules.
//
// Nothing is allocated per rule (a policy's name once per read): at
// 10,000 policies a read parses about 50,000 rules, and the netlink
// library's general parser allocated about 200 MB for them, for the
// garbage collector to sweep again every read.
func kernelPolicyCounters(table string, stage func(chain string) string) ([]api.RuleCounter, error) {
	s, err := openNF()
	if err != nil {
		return nil, err
	}
	defer s.close()
	chains, err := retryDump(func() ([]string, error) { return s.dumpChains(table) })
	if err != nil {
		return nil, err
	}
	sums := newCounterSums()
	var staged []stagedCounter
	for _, c := range chains {
		st := stage(c)
		if st == "" {
			continue
		}
		// A dump the kernel flags interrupted (the table changed
		// meanwhile) is read again; only a whole one is summed.
		staged, err = retryDump(func() ([]stagedCounter, error) {
			staged = staged[:0]
			err := s.dumpRuleCounters(table, c, func(comment []byte, packets, bytes uint64) {
				if name, idx, ok := policyRule(comment); ok {
					staged = append(staged, stagedCounter{policy: sums.intern(name), rule: idx, packets: packets, bytes: bytes})
				}
			})
			return staged, err
		})
		if err != nil {
			return nil, err
		}
		for _, sc := range staged {
			sums.add(sc.policy, sc.rule, st, sc.packets, sc.bytes)
		}
	}
	return sums.list(), nil
}

// stagedCounter is one counter of a chain's dump, summed when the dump
// completes.
type stagedCounter struct {
	policy         string
	rule           int
	packets, bytes uint64
}

// errDumpInterrupted is a dump the kernel flagged NLM_F_DUMP_INTR.
var errDumpInterrupted = errors.New("netlink dump interrupted (the table changed meanwhile)")

// retryDump runs dump again, up to three times in all, while the kernel
// reports it interrupted (the table changed meanwhile).
func retryDump[T any](dump func() ([]T, error)) ([]T, error) {
	var err error
	for range 3 {
		var out []T
		out, err = dump()
		if !errors.Is(err, errDumpInterrupted) {
			return out, err
		}
	}
	return nil, err
}

// nfSocket is a netlink socket to nftables in the network namespace of
// the thread that opened it, with one receive buffer for a series of
// dumps.
type nfSocket struct {
	fd  int
	seq uint32
	buf []byte
}

// nfTimeout bounds a send or a receive on an nfSocket.
var nfTimeout = unix.Timeval{Sec: 60}

func openNF() (*nfSocket, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("open nftables netlink socket: %w", err)
	}
	s := &nfSocket{fd: fd, buf: make([]byte, 64<<10)}
	for _, opt := range []int{unix.SO_RCVTIMEO, unix.SO_SNDTIMEO} {
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, opt, &nfTimeout); err != nil {
			s.close()
			return nil, fmt.Errorf("set nftables netlink socket timeout: %w", err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		s.close()
		return nil, fmt.Errorf("bind nftables netlink socket: %w", err)
	}
	return s, nil
}

func (s *nfSocket) close() { unix.Close(s.fd) }

// dump sends an NFT_MSG_GET* dump request (msg) for the inet family with
// attrs (netlink attributes), and calls fn with the attributes of each
// message of the answer, which alias the socket's buffer. It returns the
// kernel's error as a unix.Errno, errDumpInterrupted when the kernel
// flagged the dump.
func (s *nfSocket) dump(msg uint16, attrs []byte, fn func(attrs []byte) error) error {
	s.seq++
	req := make([]byte, unix.NLMSG_HDRLEN+4, unix.NLMSG_HDRLEN+4+len(attrs))
	req = append(req, attrs...)
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], unix.NFNL_SUBSYS_NFTABLES<<8|msg)
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	binary.NativeEndian.PutUint32(req[8:], s.seq)
	req[unix.NLMSG_HDRLEN] = unix.NFPROTO_INET
	req[unix.NLMSG_HDRLEN+1] = unix.NFNETLINK_V0
	if err := unix.Sendto(s.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("send netlink dump request: %w", err)
	}
	interrupted := false
	for {
		n, _, err := unix.Recvfrom(s.fd, s.buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("receive netlink dump: %w", err)
		}
		b := s.buf[:n]
		for len(b) >= unix.NLMSG_HDRLEN {
			l := int(binary.NativeEndian.Uint32(b[0:]))
			typ := binary.NativeEndian.Uint16(b[4:])
			flags := binary.NativeEndian.Uint16(b[6:])
			seq := binary.NativeEndian.Uint32(b[8:])
			if l < unix.NLMSG_HDRLEN || l > len(b) {
				return fmt.Errorf("receive netlink dump: malformed message (length %d of %d bytes)", l, len(b))
			}
			body := b[unix.NLMSG_HDRLEN:l]
			b = b[min(align4(l), len(b)):]
			if seq != s.seq {
				continue // an earlier request's
			}
			if flags&unix.NLM_F_DUMP_INTR != 0 {
				interrupted = true
			}
			switch typ {
			case unix.NLMSG_DONE, unix.NLMSG_ERROR:
				if len(body) >= 4 {
					if e := int32(binary.NativeEndian.Uint32(body)); e < 0 {
						return unix.Errno(-e)
					}
				}
				if typ == unix.NLMSG_ERROR {
					continue // an acknowledgement
				}
				if interrupted {
					return errDumpInterrupted
				}
				return nil
			}
			if len(body) < 4 {
				continue
			}
			if err := fn(body[4:]); err != nil { // past nfgenmsg
				return err
			}
		}
	}
}

func align4(n int) int { return (n + 3) &^ 3 }

// attrs walks netlink attributes: next returns each one's type (nested
// and byte-order flags stripped) and value.
type attrs []byte

func (a *attrs) next() (typ uint16, v []byte, ok bool) {
	b := *a
	if len(b) < 4 {
		return 0, nil, false
	}
	l := int(binary.NativeEndian.Uint16(b[0:]))
	if l < 4 || l > len(b) {
		*a = nil
		return 0, nil, false
	}
	typ = attrType(binary.NativeEndian.Uint16(b[2:]))
	*a = b[min(align4(l), len(b)):]
	return typ, b[4:l], true
}

// strAttr appends a NUL-terminated string attribute.
func strAttr(b []byte, typ uint16, v string) []byte {
	l := 4 + len(v) + 1
	b = binary.NativeEndian.AppendUint16(b, uint16(l))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(append(b, v...), 0)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// dumpChains returns the names of the chains of table inet <table>; none
// when there is no such table.
func (s *nfSocket) dumpChains(table string) ([]string, error) {
	var names []string
	err := s.dump(unix.NFT_MSG_GETCHAIN, nil, func(b []byte) error {
		a := attrs(b)
		var tbl, name []byte
		for typ, v, ok := a.next(); ok; typ, v, ok = a.next() {
			switch typ {
			case unix.NFTA_CHAIN_TABLE:
				tbl = cBytes(v)
			case unix.NFTA_CHAIN_NAME:
				name = cBytes(v)
			}
		}
		if string(tbl) == table {
			names = append(names, string(name))
		}
		return nil
	})
	if err != nil {
		return names, fmt.Errorf("dump chains of table inet %s: %w", table, err)
	}
	return names, nil
}

// dumpRuleCounters dumps the rules of one chain and calls fn with each
// counter expression's packets and bytes and its rule's comment (which
// aliases the socket's buffer); nothing when the chain (or its table) is
// gone.
func (s *nfSocket) dumpRuleCounters(table, chain string, fn func(comment []byte, packets, bytes uint64)) error {
	req := strAttr(strAttr(nil, unix.NFTA_RULE_TABLE, table), unix.NFTA_RULE_CHAIN, chain)
	err := s.dump(unix.NFT_MSG_GETRULE, req, func(b []byte) error {
		ruleCounters(b, fn)
		return nil
	})
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil
	case err != nil:
		return fmt.Errorf("dump rules of chain %s in table inet %s: %w", chain, table, err)
	}
	return nil
}

// ruleCounters reads the attributes of one NFT_MSG_NEWRULE message of a
// dump and calls fn for each "counter" expression with its packets and
// bytes and the rule's comment (the userdata's NFTNL_UDATA_RULE_COMMENT).
func ruleCounters(b []byte, fn func(comment []byte, packets, bytes uint64)) {
	var exprs, comment []byte
	a := attrs(b)
	for typ, v, ok := a.next(); ok; typ, v, ok = a.next() {
		switch typ {
		case unix.NFTA_RULE_USERDATA:
			comment = userdataComment(v)
		case unix.NFTA_RULE_EXPRESSIONS:
			exprs = v
		}
	}
	list := attrs(exprs)
	for typ, el, ok := list.next(); ok; typ, el, ok = list.next() {
		if typ != unix.NFTA_LIST_ELEM {
			continue
		}
		var name, data []byte
		parts := attrs(el)
		for typ, v, ok := parts.next(); ok; typ, v, ok = parts.next() {
			switch typ {
			case unix.NFTA_EXPR_NAME:
				name = cBytes(v)
			case unix.NFTA_EXPR_DATA:
				data = v
			}
		}
		if string(name) != "counter" {
			continue
		}
		var packets, bytes uint64
		cs := attrs(data)
		for typ, v, ok := cs.next(); ok; typ, v, ok = cs.next() {
			if len(v) != 8 {
				continue
			}
			switch typ {
			case unix.NFTA_COUNTER_BYTES:
				bytes = binary.BigEndian.Uint64(v)
			case unix.NFTA_COUNTER_PACKETS:
				packets = binary.BigEndian.Uint64(v)
			}
		}
		fn(comment, packets, bytes)
	}
}

// userdataComment returns the comment in a rule's userdata (type-length-
// value records of one byte each; the comment is type 0, NUL-terminated),
// or nil.
func userdataComment(b []byte) []byte {
	for len(b) >= 2 {
		typ, n := b[0], int(b[1])
		if len(b) < 2+n {
			return nil
		}
		if typ == 0 { // NFTNL_UDATA_RULE_COMMENT
			return cBytes(b[2 : 2+n])
		}
		b = b[2+n:]
	}
	return nil
}

// attrType strips the nested and byte-order flags off an attribute type.
func attrType(t uint16) uint16 { return t &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER) }

// cBytes returns b up to its first NUL.
func cBytes(b []byte) []byte {
	for i, c := range b {
		if c == 0 {
			return b[:i]
		}
	}
	return b
}
