package firewall

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strings"

	"github.com/romana/romana/hoststate"
)

// hashIndex is the hash of each block of a table by the block's name in a
// listing ("chain x", "set s", "map m"), with the combination of all of
// them, and of the policy chains' alone, kept up to date as blocks are set
// and deleted: what the stamps and the stored listing hash are made of.
//
// The combination is order-independent: each block contributes a term,
// the SHA-256 of "<name> <hash>\n" read as four 64-bit lanes, and the
// terms are added lane by lane (modulo 2^64). Setting or deleting a block
// adds or subtracts its term, so a change costs what it touches, not a
// pass sorting and hashing every block of the table (1,110 chains at
// 10,000 policies, where one policy change touches one or two). The
// combined hash is the SHA-256 of the lanes and the number of blocks. Two
// different sets of blocks combine alike only if their terms cancel,
// which takes a SHA-256 collision to arrange; the combination finds
// edits, it does not authenticate (whoever can edit the table can edit
// the stored hash as well).
//
// A hashIndex is not safe for concurrent use; clone it to keep a copy.
type hashIndex struct {
	m map[string]string
	// all is the sum of every block's term, pol that of the policy
	// chains' (hoststate.IsPolicyChain), npol their number.
	all, pol lanes
	npol     int
}

// lanes are four 64-bit words added lane by lane.
type lanes [4]uint64

func (a *lanes) add(b lanes) {
	for i := range a {
		a[i] += b[i]
	}
}

func (a *lanes) sub(b lanes) {
	for i := range a {
		a[i] -= b[i]
	}
}

// newHashIndex returns an empty index with room for n blocks.
func newHashIndex(n int) *hashIndex {
	return &hashIndex{m: make(map[string]string, n)}
}

// indexOf returns the index of the block hashes in m (it keeps m).
func indexOf(m map[string]string) *hashIndex {
	x := &hashIndex{m: m}
	for b, h := range m {
		x.addTerm(b, h)
	}
	return x
}

// term is block b's contribution when its hash is h.
func term(b, h string) lanes {
	var buf [256]byte
	line := append(append(append(append(buf[:0], b...), ' '), h...), '\n')
	s := sha256.Sum256(line)
	var l lanes
	for i := range l {
		l[i] = binary.LittleEndian.Uint64(s[8*i:])
	}
	return l
}

// isPolicyBlock reports whether block b is a policy chain, which
// PolicyStamp covers rather than Stamp.
func isPolicyBlock(b string) bool {
	name, ok := strings.CutPrefix(b, "chain ")
	return ok && hoststate.IsPolicyChain(name)
}

func (x *hashIndex) addTerm(b, h string) {
	t := term(b, h)
	x.all.add(t)
	if isPolicyBlock(b) {
		x.pol.add(t)
		x.npol++
	}
}

func (x *hashIndex) subTerm(b, h string) {
	t := term(b, h)
	x.all.sub(t)
	if isPolicyBlock(b) {
		x.pol.sub(t)
		x.npol--
	}
}

// set makes h block b's hash.
func (x *hashIndex) set(b, h string) {
	if old, ok := x.m[b]; ok {
		if old == h {
			return
		}
		x.subTerm(b, old)
	}
	x.m[b] = h
	x.addTerm(b, h)
}

// del deletes block b, if present.
func (x *hashIndex) del(b string) {
	if old, ok := x.m[b]; ok {
		x.subTerm(b, old)
		delete(x.m, b)
	}
}

// get returns block b's hash.
func (x *hashIndex) get(b string) (string, bool) {
	h, ok := x.m[b]
	return h, ok
}

// clone returns an independent copy of x.
func (x *hashIndex) clone() *hashIndex {
	c := *x
	c.m = make(map[string]string, len(x.m))
	for b, h := range x.m {
		c.m[b] = h
	}
	return &c
}

// combined hashes a sum of n blocks' terms into the hex string stored in
// the table.
func combined(l lanes, n int) string {
	var buf [40]byte
	for i, v := range l {
		binary.LittleEndian.PutUint64(buf[8*i:], v)
	}
	binary.LittleEndian.PutUint64(buf[32:], uint64(n))
	s := sha256.Sum256(buf[:])
	return hex.EncodeToString(s[:12])
}

// sum is the combined hash of every block.
func (x *hashIndex) sum() string { return combined(x.all, len(x.m)) }

// sumWithout is the combined hash of every block but those of skip.
func (x *hashIndex) sumWithout(skip map[string]bool) string {
	l, n := x.all, len(x.m)
	for b := range skip {
		if h, ok := x.m[b]; ok {
			l.sub(term(b, h))
			n--
		}
	}
	return combined(l, n)
}

// sumBase is the combined hash of every block but the policy chains, and
// of extra, a part named "rest" if not "" (what Stamp covers).
func (x *hashIndex) sumBase(extra string) string {
	l, n := x.all, len(x.m)-x.npol
	l.sub(x.pol)
	if extra != "" {
		l.add(term("rest", extra))
		n++
	}
	return combined(l, n)
}

// sumPolicy is the combined hash of the policy chains (what PolicyStamp
// covers).
func (x *hashIndex) sumPolicy() string { return combined(x.pol, x.npol) }
