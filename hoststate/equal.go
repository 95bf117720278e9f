package hoststate

import "slices"

// Equal reports whether rs and o are the same ruleset (what String would
// tell, and the flowtables' pending devices, without rendering either: rules kept from an earlier computation
// share their strings, so comparing them costs little).
func (rs Ruleset) Equal(o Ruleset) bool {
	return slices.EqualFunc(rs.Sets, o.Sets, func(a, b Set) bool {
		return a.Name == b.Name && a.KeyType == b.KeyType && a.Interval == b.Interval && a.Comment == b.Comment && slices.Equal(a.Elements, b.Elements)
	}) && slices.EqualFunc(rs.Maps, o.Maps, func(a, b Map) bool {
		return a.Name == b.Name && a.KeyType == b.KeyType && a.Comment == b.Comment && slices.Equal(a.Elements, b.Elements)
	}) && slices.EqualFunc(rs.Chains, o.Chains, func(a, b Chain) bool {
		return a.Name == b.Name && a.Hook == b.Hook && a.Comment == b.Comment && sameRules(a.Rules, b.Rules)
	}) && slices.EqualFunc(rs.Flowtables, o.Flowtables, func(a, b Flowtable) bool {
		return a.Name == b.Name && slices.Equal(a.Devices, b.Devices) && slices.Equal(a.Pending, b.Pending)
	})
}

// sameRules compares rule lists; one list (a chain the Compiler kept) is
// equal without reading it.
func sameRules(a, b []Rule) bool {
	if len(a) > 0 && len(a) == len(b) && &a[0] == &b[0] {
		return true
	}
	return slices.Equal(a, b)
}
