package api

import "net/netip"

// FabricRoute is one static route of a fabric device. More than one next
// hop is an equal-cost multipath route.
type FabricRoute struct {
	Dst  netip.Prefix `json:"dst"`
	Via  []netip.Addr `json:"via"`
	Note string       `json:"note,omitempty"` // what it is for: "host h1", "rack=r1 via tor1"
}

// FabricRoutes is what one fabric device needs (GET /v1/fabric/routes):
// its static routes, aggregated by the plan's topology levels, and the
// aggregates a top-of-rack announces to its spines in a BGP fabric.
type FabricRoutes struct {
	Device   string         `json:"device"`
	Kind     string         `json:"kind"`
	Group    string         `json:"group,omitempty"` // "rack=r1"
	Routes   []FabricRoute  `json:"routes"`
	Announce []netip.Prefix `json:"announce,omitempty"`
	Problems []string       `json:"problems,omitempty"`
}
