package firewall

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os/exec"
	"slices"
	"strings"

	"sigs.k8s.io/knftables"
)

// Edits are found by comparing what nft lists with what it listed right
// after the adapter's own last write. nft prints rules in its own form
// ("ip daddr 10.0.0.5/32" as "ip daddr 10.0.0.5", "icmp type 8" as "icmp
// type echo-request", masks simplified), which differs between nft
// versions, so the desired rule text cannot be compared with the listing
// directly. Instead, after each write the adapter lists what it wrote (the
// whole table after a replacement, only the chains, sets and maps it
// changed after a delta) and keeps the hash of each block of the listing
// in memory; it also stores, as the comments of the rules of a chain no
// packet ever enters (sumChain), the ruleset's stamps and one hash of all
// the block hashes. A later check lists the table once and compares: any
// change to a rule's text (a drop rewritten into accept with its comment
// kept), a chain's hook or policy, a set's or map's elements, or a chain,
// set or map added or deleted, changes a block's hash. A new agent adopts
// the table its predecessor wrote without rewriting it, since the stamps
// and the hash of hashes live in the kernel. An edit made between a write
// and the listing after it would be taken as written: that window is one
// nft invocation long.

// sumChain is the regular chain (no hook, never jumped to) whose rules'
// comments hold the hashes of the listing, "<sumPrefix><part> <hash>"
// (in table inet romana, after the ruleset's stamps).
const sumChain = "listing-sums"

const sumPrefix = "romana listing "

// errTableMissing is returned by a lister when the table does not exist.
var errTableMissing = errors.New("table missing")

// listing is a table as `nft --stateless list table` prints it, split into
// blocks (chains, maps and sets), each a list of trimmed lines.
type listing struct {
	chains map[string]*listedChain
	// others are the map and set blocks, by "map <name>" or "set <name>".
	others map[string][]string
}

// listedChain is one chain of a listing.
type listedChain struct {
	// lines are the whole block: chain comment, hook line, rules.
	lines []string
	rules []listedRule
}

// listedRule is one rule line, split into its expression and comment.
type listedRule struct {
	expr       string
	comment    string
	hasComment bool
}

// lister lists a table; it returns errTableMissing when there is none.
type lister interface {
	list(ctx context.Context) (*listing, error)
	// listBlocks lists at least the named blocks ("chain x", "map m",
	// "set s"), which must exist: the listing may hold more.
	listBlocks(ctx context.Context, blocks []string) (*listing, error)
}

// nftLister runs `nft --stateless list table <family> <table>` in the
// calling thread's network namespace. --stateless leaves counter values
// out, so traffic does not change the listing.
type nftLister struct {
	family knftables.Family
	table  string
}

func (l nftLister) list(ctx context.Context) (*listing, error) {
	return l.run(ctx, "table", "")
}

// maxBlockListings is how many blocks listBlocks lists one by one (one
// nft run each, a few milliseconds when the blocks are small) before it
// lists the whole table instead. nft lists nothing in a batch (nft -f).
const maxBlockListings = 16

func (l nftLister) listBlocks(ctx context.Context, blocks []string) (*listing, error) {
	if len(blocks) > maxBlockListings {
		return l.list(ctx)
	}
	out := &listing{chains: map[string]*listedChain{}, others: map[string][]string{}}
	for _, b := range blocks {
		kind, name, _ := strings.Cut(b, " ")
		one, err := l.run(ctx, kind, name)
		if err != nil {
			return nil, err
		}
		maps.Copy(out.chains, one.chains)
		maps.Copy(out.others, one.others)
	}
	return out, nil
}

// run lists the table (kind "table") or one of its chains, sets or maps.
func (l nftLister) run(ctx context.Context, kind, name string) (*listing, error) {
	args := []string{"--stateless", "list", kind, string(l.family), l.table}
	if name != "" {
		args = append(args, name)
	}
	cmd := exec.CommandContext(ctx, "nft", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if kind == "table" && strings.Contains(msg, "No such file or directory") {
			return nil, errTableMissing
		}
		return nil, fmt.Errorf("nft %s: %w: %s", strings.Join(args, " "), err, msg)
	}
	return parseListing(stdout.String())
}

// dumpLister reads knftables' fake (or a wrapper of it) through its
// Dump, which holds rules as written: "add chain|map|rule|element <family>
// <table> <name> ...", objects first, then rules and elements in order.
type dumpLister struct {
	fake   interface{ Dump() string }
	family knftables.Family
	table  string
}

func (l dumpLister) list(context.Context) (*listing, error) {
	out := &listing{chains: map[string]*listedChain{}, others: map[string][]string{}}
	prefix := fmt.Sprintf(" %s %s ", l.family, l.table)
	found := false
	for _, line := range strings.Split(l.fake.Dump(), "\n") {
		verb, rest, ok := strings.Cut(line, " ")
		if !ok || verb != "add" {
			continue
		}
		kind, rest, _ := strings.Cut(rest, " ")
		if kind == "table" && (rest == string(l.family)+" "+l.table || strings.HasPrefix(rest, string(l.family)+" "+l.table+" ")) {
			found = true
			continue
		}
		rest, ok = strings.CutPrefix(" "+rest, prefix)
		if !ok {
			continue // another table
		}
		name, body, _ := strings.Cut(rest, " ")
		switch kind {
		case "chain":
			out.chains[name] = &listedChain{lines: []string{body}}
		case "map", "set", "flowtable":
			out.others[kind+" "+name] = append(out.others[kind+" "+name], body)
		case "rule":
			c := out.chains[name]
			if c == nil {
				return nil, fmt.Errorf("fake dump: rule of unknown chain %q", name)
			}
			c.lines = append(c.lines, body)
			c.rules = append(c.rules, splitComment(body))
		case "element":
			if m := "map " + name; out.others[m] != nil {
				out.others[m] = append(out.others[m], body)
			} else {
				out.others["set "+name] = append(out.others["set "+name], body)
			}
		}
	}
	if !found {
		return nil, errTableMissing
	}
	for _, lines := range out.others {
		slices.Sort(lines[1:]) // elements, in no meaningful order
	}
	return out, nil
}

func (l dumpLister) listBlocks(ctx context.Context, _ []string) (*listing, error) {
	return l.list(ctx)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// newLister returns the lister matching nft: knftables' fake (or a
// wrapper of it) is read through its Dump, anything else by running nft.
func newLister(nft knftables.Interface, family knftables.Family, table string) lister {
	if f, ok := nft.(interface{ Dump() string }); ok {
		return dumpLister{fake: f, family: family, table: table}
	}
	return nftLister{family: family, table: table}
}

// braceDelta returns how many more '{' than '}' line has outside quoted
// strings.
func braceDelta(line string) int {
	d, quoted := 0, false
	for i := 0; i < len(line); i++ {
		switch c := line[i]; {
		case c == '\\' && quoted:
			i++
		case c == '"':
			quoted = !quoted
		case c == '{' && !quoted:
			d++
		case c == '}' && !quoted:
			d--
		}
	}
	return d
}

// parseListing parses the listing of one table.
func parseListing(out string) (*listing, error) {
	l := &listing{chains: map[string]*listedChain{}, others: map[string][]string{}}
	depth, tables := 0, false
	var kind, name string
	var lines []string
	for _, raw := range strings.Split(out, "\n") {
		line := strings.TrimSpace(raw)
		if line == "" {
			continue
		}
		delta := braceDelta(line)
		switch {
		case depth == 0:
			if !strings.HasPrefix(line, "table ") || delta != 1 || tables {
				return nil, fmt.Errorf("parse nft listing: want one table, got %q", line)
			}
			tables = true
		case depth == 1 && delta == 1:
			f := strings.Fields(line)
			if len(f) != 3 || f[2] != "{" {
				return nil, fmt.Errorf("parse nft listing: unexpected block %q", line)
			}
			kind, name, lines = f[0], f[1], nil
		case depth == 1:
			// A table-level line (the table's comment or flags).
		case depth == 2 && delta == -1 && line == "}":
			if kind == "chain" {
				l.chains[name] = parseChain(lines)
			} else {
				l.others[kind+" "+name] = lines
			}
		default:
			lines = append(lines, line)
		}
		depth += delta
		if depth < 0 {
			return nil, fmt.Errorf("parse nft listing: unbalanced braces at %q", line)
		}
	}
	if depth != 0 || !tables {
		return nil, errors.New("parse nft listing: no table, or unbalanced braces at the end")
	}
	return l, nil
}

// parseChain splits a chain block into its header lines (comment, hook)
// and rules.
func parseChain(lines []string) *listedChain {
	c := &listedChain{lines: lines}
	for i, line := range lines {
		if strings.HasSuffix(line, ";") || (i == 0 && strings.HasPrefix(line, `comment "`)) {
			continue // "type filter hook ... policy accept;" or the chain's comment
		}
		c.rules = append(c.rules, splitComment(line))
	}
	return c
}

// splitComment splits `<expr> comment "<text>"` (nft escapes no quote
// inside: comments hold no '"').
func splitComment(line string) listedRule {
	const marker = ` comment "`
	i := strings.LastIndex(line, marker)
	if i < 0 || len(line) < i+len(marker)+1 || !strings.HasSuffix(line, `"`) {
		return listedRule{expr: line}
	}
	text := line[i+len(marker) : len(line)-1]
	if strings.Contains(text, `"`) {
		return listedRule{expr: line}
	}
	return listedRule{expr: line[:i], comment: text, hasComment: true}
}

// sum hashes the named blocks ("chain <name>", "map <name>", "set <name>"),
// missing ones included as missing.
func (l *listing) sum(blocks []string) string {
	h := sha256.New()
	for _, b := range blocks {
		kind, name, _ := strings.Cut(b, " ")
		var lines []string
		ok := false
		if kind == "chain" {
			var c *listedChain
			if c, ok = l.chains[name]; ok {
				lines = c.lines
			}
		} else {
			lines, ok = l.others[b]
		}
		fmt.Fprintf(h, "%s %v %d\n", b, ok, len(lines))
		for _, line := range lines {
			fmt.Fprintf(h, "%s\n", line)
		}
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// sums returns the hashes stored in sumChain, by part.
func (l *listing) sums() map[string]string {
	out := map[string]string{}
	c := l.chains[sumChain]
	if c == nil {
		return out
	}
	for _, r := range c.rules {
		part, hash, ok := strings.Cut(strings.TrimPrefix(r.comment, sumPrefix), " ")
		if ok && strings.HasPrefix(r.comment, sumPrefix) {
			out[part] = hash
		}
	}
	return out
}

// sumsTx adds to tx the operations that store sums (part -> hash) in
// sumChain, replacing what it held.
func sumsTx(tx *knftables.Transaction, sums map[string]string) {
	var comments []string
	for _, part := range sortedKeys(sums) {
		comments = append(comments, sumPrefix+part+" "+sums[part])
	}
	storeTx(tx, comments)
}

// storeTx adds to tx the operations that make sumChain hold one rule per
// comment, replacing what it held.
//
// The rules are "counter", not a verdict: a rule holding a verdict
// (return, accept, jump) makes the kernel validate the whole table's
// graph of chains when the transaction commits (about 10 ms of system
// time at 50,000 rules, per store), and one without makes it check
// nothing. Only the comments are read back (listing.stored), so a table
// whose sums an older agent stored as "return" rules is adopted alike.
func storeTx(tx *knftables.Transaction, comments []string) {
	tx.Add(&knftables.Chain{Name: sumChain, Comment: knftables.PtrTo("hashes of this table's listing, to find edits; never entered")})
	tx.Flush(&knftables.Chain{Name: sumChain})
	for _, c := range comments {
		tx.Add(&knftables.Rule{Chain: sumChain, Rule: "counter", Comment: knftables.PtrTo(c)})
	}
}

// blockSum hashes one block of the listing ("chain x", "map m", ...); ok
// is false when the listing has no such block. The elements of a set or
// map are hashed in sorted order: nft prints them in the order of the
// kernel's hash table, which may change without any edit.
func (l *listing) blockSum(b string) (sum string, ok bool) {
	kind, name, _ := strings.Cut(b, " ")
	var lines []string
	if kind == "chain" {
		c, found := l.chains[name]
		if !found {
			return "", false
		}
		lines = c.lines
	} else {
		if lines, ok = l.others[b]; !ok {
			return "", false
		}
		lines = sortedElements(lines)
	}
	h := sha256.New()
	for _, line := range lines {
		io.WriteString(h, line)
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil)[:12]), true
}

// blockSums returns the hash of every block of the listing but sumChain.
func (l *listing) blockSums() map[string]string {
	out := map[string]string{}
	for name := range l.chains {
		if name != sumChain {
			out["chain "+name], _ = l.blockSum("chain " + name)
		}
	}
	for b := range l.others {
		if strings.HasPrefix(b, "flowtable ") {
			continue // devices follow endpoints; presence: flowtablesMissing
		}
		out[b], _ = l.blockSum(b)
	}
	return out
}

// sortedElements returns the lines of a set or map block as nft lists
// them ("elements = { a : x, b : y," wrapped over lines, up to " }"), its
// elements sorted into one line.
func sortedElements(lines []string) []string {
	i := slices.IndexFunc(lines, func(s string) bool { return strings.HasPrefix(s, "elements = {") })
	if i < 0 {
		return lines
	}
	all := strings.TrimPrefix(strings.Join(lines[i:], " "), "elements = {")
	all, ok := strings.CutSuffix(all, "}")
	if !ok {
		return lines
	}
	elems := strings.Split(all, ",")
	for j := range elems {
		elems[j] = strings.TrimSpace(elems[j])
	}
	slices.Sort(elems)
	return append(slices.Clone(lines[:i]), "elements = { "+strings.Join(elems, ", ")+" }")
}

// stored returns the comments of sumChain's rules.
func (l *listing) stored() []string {
	c := l.chains[sumChain]
	if c == nil {
		return nil
	}
	var out []string
	for _, r := range c.rules {
		out = append(out, r.comment)
	}
	return out
}
