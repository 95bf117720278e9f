package firewall

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"

	"sigs.k8s.io/knftables"

	"github.com/romana/romana/hoststate"
)

// The software flowtable (hoststate.Flowtable, romana-agent --flowtable).
//
// The flowtable is created with the table, by the replacing transaction;
// the forward chain's offload rules ("flow add @fastpath") are ordinary
// rules, stamped and hashed like the others. Its device list is kept out
// of the stamps and of the listing's hashes: endpoints come and go, and a
// new device must not replace the table (which would delete the
// flowtable, and with it every offloaded flow, and rewrite every policy
// chain). After each Apply, syncFlowtables lists the flowtable alone and
// adds, in one transaction, the wanted devices it lacks ("add flowtable
// ... { devices = { ... } }" adds to an existing flowtable's devices).
// Devices are never removed by the adapter: the kernel unhooks a device
// when it is deleted, and an extra device costs a lookup per packet on it
// and offloads nothing the forward chain did not offload.

// flowtableObject is the knftables object creating ft (its devices quoted:
// endpoint names may hold '-' or '.').
func flowtableObject(ft hoststate.Flowtable, devices []string) *knftables.Flowtable {
	kf := &knftables.Flowtable{Name: ft.Name, Priority: knftables.PtrTo(knftables.FilterIngressPriority)}
	for _, d := range devices {
		kf.Devices = append(kf.Devices, fmt.Sprintf("%q", d))
	}
	return kf
}

// addFlowtables adds want's flowtables to a transaction that creates the
// table: before any rule, which may name them.
func addFlowtables(tx *knftables.Transaction, want hoststate.Ruleset) {
	for _, ft := range want.Flowtables {
		tx.Add(flowtableObject(ft, ft.Devices))
	}
}

// withoutDevices returns the flowtables with their names only, for the
// stamps: a device list that changes never means a new table.
func withoutDevices(fts []hoststate.Flowtable) []hoststate.Flowtable {
	var out []hoststate.Flowtable
	for _, ft := range fts {
		out = append(out, hoststate.Flowtable{Name: ft.Name})
	}
	return out
}

// flowtablesMissing names the first wanted flowtable the listing lacks.
func flowtablesMissing(live *listing, want hoststate.Ruleset) string {
	for _, ft := range want.Flowtables {
		if _, ok := live.others["flowtable "+ft.Name]; !ok {
			return "flowtable " + ft.Name + " missing"
		}
	}
	return ""
}

// listedDevices returns the devices of a flowtable block of a listing
// ("devices = { eth0, rv-a1 }" from nft, `{ devices = { "eth0" } ; }`
// from knftables' fake dump), unquoted, sorted.
func listedDevices(lines []string) []string {
	var out []string
	for _, line := range lines {
		_, rest, ok := strings.Cut(line, "devices = {")
		if !ok {
			continue
		}
		list, _, _ := strings.Cut(rest, "}")
		for _, d := range strings.Split(list, ",") {
			if d = strings.Trim(strings.TrimSpace(d), `"`); d != "" {
				out = append(out, d)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// missingDevices returns the wanted devices not in live (both sorted).
func missingDevices(want, live []string) []string {
	var out []string
	for _, d := range want {
		if _, found := slices.BinarySearch(live, d); !found {
			out = append(out, d)
		}
	}
	return out
}

// syncFlowtables adds to each of want's flowtables the devices it lacks,
// in one transaction; added reports whether it wrote anything.
func (f *Firewall) syncFlowtables(ctx context.Context, want hoststate.Ruleset) (added bool, err error) {
	if len(want.Flowtables) == 0 {
		return false, nil
	}
	tx := f.nft.NewTransaction()
	var all []string
	for _, ft := range want.Flowtables {
		lines, err := f.listFlowtable(ctx, ft.Name)
		if err != nil {
			return false, fmt.Errorf("list flowtable %s of table %s %s: %w", ft.Name, Family, hoststate.Table, err)
		}
		missing := missingDevices(ft.Devices, listedDevices(lines))
		if len(missing) == 0 {
			continue
		}
		tx.Add(flowtableObject(ft, missing))
		all = append(all, missing...)
	}
	if len(all) == 0 {
		return false, nil
	}
	if err := f.nft.Run(ctx, tx); err != nil {
		return false, fmt.Errorf("add devices %v to the flowtables of table %s %s: %w", all, Family, hoststate.Table, err)
	}
	f.log.Info("nftables flowtable devices added", "table", string(Family)+" "+hoststate.Table, "devices", all)
	return true, nil
}

// listFlowtable returns the lines of one flowtable's block: from
// knftables' fake, its dump; from nft, `nft list flowtable`, which reads
// the flowtable alone (not the whole table with its policy chains).
func (f *Firewall) listFlowtable(ctx context.Context, name string) ([]string, error) {
	var live *listing
	var err error
	if d, ok := f.lister.(dumpLister); ok {
		live, err = d.list(ctx)
	} else {
		live, err = listFlowtableNft(ctx, name)
	}
	if err != nil {
		return nil, err
	}
	lines, ok := live.others["flowtable "+name]
	if !ok {
		return nil, errors.New("not in the listing")
	}
	return lines, nil
}

func listFlowtableNft(ctx context.Context, name string) (*listing, error) {
	out, err := exec.CommandContext(ctx, "nft", "list", "flowtable", string(Family), hoststate.Table, name).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("nft list flowtable: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return parseListing(string(out))
}

// FlowtableSupport reports whether the kernel can hold a software
// flowtable (CONFIG_NF_FLOW_TABLE, CONFIG_NFT_FLOW_OFFLOAD), by checking
// (nft --check: nothing is committed) a transaction that adds one on lo
// to table inet romana.
func (f *Firewall) FlowtableSupport(ctx context.Context) error {
	tx := f.nft.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Add(flowtableObject(hoststate.Flowtable{Name: "romana-probe"}, []string{"lo"}))
	if err := f.nft.Check(ctx, tx); err != nil {
		return fmt.Errorf("check a flowtable in table %s %s: %w (is the kernel built with CONFIG_NF_FLOW_TABLE?)", Family, hoststate.Table, err)
	}
	return nil
}

// afterApply, deferred by Apply, keeps the flowtables' devices current
// once the table is applied (or found in sync).
func (f *Firewall) afterApply(ctx context.Context, rs hoststate.Ruleset, changed *bool, err *error) {
	if *err != nil || len(rs.Flowtables) == 0 {
		return
	}
	var g0 uint32
	ok0 := false
	if f.last != nil && f.last.genOK {
		g0, ok0 = f.readGen()
	}
	added, serr := f.syncFlowtables(ctx, rs)
	*changed = *changed || added
	*err = serr
	// Our own device transaction moved the generation: a resync that finds
	// it one past keeps skipping the listing.
	if added && serr == nil && ok0 && g0 == f.last.gen {
		if g1, ok := f.readGen(); ok && g1 == g0+1 {
			f.last.gen = g1
		}
	}
}
