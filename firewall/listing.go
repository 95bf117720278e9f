package firewall

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
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
// directly. Instead, after each write the adapter lists the table and
// stores a hash of each part of the listing in the table itself, as the
// comments of the rules of a chain no packet ever enters (sumChain). A
// later check lists the table once and compares: any change to a rule's
// text (a drop rewritten into accept with its comment kept), a chain's
// hook or policy, or a map's elements changes the hash. A new agent adopts
// the table its predecessor wrote without rewriting it, since the hashes
// live in the kernel. An edit made between a write and the listing after
// it would be taken as written: that window is one nft invocation long.

// sumChain is the regular chain (no hook, never jumped to) whose rules'
// comments hold the hashes of the listing, "<sumPrefix><part> <hash>".
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
}

// nftLister runs `nft --stateless list table <family> <table>` in the
// calling thread's network namespace. --stateless leaves counter values
// out, so traffic does not change the listing.
type nftLister struct {
	family knftables.Family
	table  string
}

func (l nftLister) list(ctx context.Context) (*listing, error) {
	cmd := exec.CommandContext(ctx, "nft", "--stateless", "list", "table", string(l.family), l.table)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if strings.Contains(msg, "No such file or directory") {
			return nil, errTableMissing
		}
		return nil, fmt.Errorf("nft list table %s %s: %w: %s", l.family, l.table, err, msg)
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
	return out, nil
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
	tx.Add(&knftables.Chain{Name: sumChain, Comment: knftables.PtrTo("hashes of this table's listing, to find edits; never entered")})
	tx.Flush(&knftables.Chain{Name: sumChain})
	for _, part := range sortedKeys(sums) {
		tx.Add(&knftables.Rule{Chain: sumChain, Rule: "return", Comment: knftables.PtrTo(sumPrefix + part + " " + sums[part])})
	}
}
