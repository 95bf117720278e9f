package scale

import (
	"fmt"
	"image/color"
	"math"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// Plot files, written into one directory and embedded in the doc.
const (
	PlotEndpoints = "scale-endpoints.png" // rules and elements per host vs endpoints
	PlotTenants   = "scale-tenants.png"   // rules and elements per host vs tenants
	PlotRoutes    = "scale-routes.png"    // routes per host, top-of-rack, spine vs endpoints
	PlotCompile   = "scale-compile.png"   // hoststate.Compute time vs endpoints, tenants, policies
)

var (
	colRomana      = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	colPerEndpoint = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
	colPerBlock    = color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}
	colExtra       = color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff}
	dashes         = [][]vg.Length{nil, {vg.Points(6), vg.Points(3)}, {vg.Points(2), vg.Points(2)}}
)

// series is one line: y against the swept quantity of each point.
type series struct {
	name  string
	col   color.Color
	dash  int
	y     func(Point) float64
	x     func(Point) float64
	curve Curve
}

func swept(c Curve) func(Point) float64 {
	switch c.Varies {
	case "tenants":
		return func(p Point) float64 { return float64(p.Cluster.Tenants) }
	case "policies":
		return func(p Point) float64 { return float64(p.Cluster.Policies) }
	}
	return func(p Point) float64 { return float64(p.Cluster.Endpoints) }
}

// logPlot draws the series on log-log axes and saves it as a PNG.
// Points with a value of 0 are left out (a log axis has no 0).
func logPlot(path, title, xlabel, ylabel string, ss []series) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xlabel
	p.Y.Label.Text = ylabel
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	p.X.Tick.Marker, p.Y.Tick.Marker = plot.LogTicks{Prec: -1}, plot.LogTicks{Prec: -1}
	p.Legend.Top, p.Legend.Left = true, true
	p.Add(plotter.NewGrid())
	for _, s := range ss {
		var xys plotter.XYs
		for _, pt := range s.curve.Points {
			x, y := s.x(pt), s.y(pt)
			if x > 0 && y > 0 {
				xys = append(xys, plotter.XY{X: x, Y: y})
			}
		}
		l, pts, err := plotter.NewLinePoints(xys)
		if err != nil {
			return fmt.Errorf("plot %s, %s: %w", path, s.name, err)
		}
		l.Color, pts.Color = s.col, s.col
		l.Dashes = dashes[s.dash]
		l.Width = vg.Points(1.5)
		p.Add(l, pts)
		p.Legend.Add(s.name, l, pts)
	}
	// Headroom above the data for the legend (top left), on the log axis.
	p.Y.Max *= math.Pow(p.Y.Max/p.Y.Min, 0.06*float64(len(ss)))
	if err := p.Save(7*vg.Inch, 4.5*vg.Inch, path); err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	return nil
}

// find returns the curve named name (empty when there is none).
func find(cs []Curve, name string) Curve {
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	return Curve{}
}

// ruleSeries: rules (solid) and elements (dashed) of the three schemes.
func ruleSeries(c Curve) []series {
	x := swept(c)
	mk := func(name string, col color.Color, dash int, y func(Point) float64) series {
		return series{name: name, col: col, dash: dash, x: x, y: y, curve: c}
	}
	return []series{
		mk("Romana: rules", colRomana, 0, func(p Point) float64 { return float64(p.Romana.Rules) }),
		mk("Romana: elements", colRomana, 1, func(p Point) float64 { return float64(p.Romana.Elements) }),
		mk("per-endpoint: rules", colPerEndpoint, 0, func(p Point) float64 { return float64(p.PerEndpoint.Rules) }),
		mk("per-endpoint: elements", colPerEndpoint, 1, func(p Point) float64 { return float64(p.PerEndpoint.Elements) }),
		mk("per-block: rules", colPerBlock, 0, func(p Point) float64 { return float64(p.PerBlock.Rules) }),
		mk("per-block: elements", colPerBlock, 1, func(p Point) float64 { return float64(p.PerBlock.Elements) }),
	}
}

// WritePlots writes the four plots into dir.
func WritePlots(dir string, r Results) error {
	eps, tns, pols := find(r.Curves, "endpoints"), find(r.Curves, "tenants"), find(r.Curves, "policies")
	fixedT, fixedE := 0, 0 // the tenants of the endpoints curve, the endpoints of the tenants curve
	if len(eps.Points) > 0 {
		fixedT = eps.Points[0].Cluster.Tenants
	}
	if len(tns.Points) > 0 {
		fixedE = tns.Points[0].Cluster.Endpoints
	}
	if err := logPlot(filepath.Join(dir, PlotEndpoints), fmt.Sprintf("nft rules and elements on one host (%s tenants, %d hosts)", num(fixedT), r.Hosts),
		"endpoints in the cluster", "count on one host", ruleSeries(eps)); err != nil {
		return err
	}
	if err := logPlot(filepath.Join(dir, PlotTenants), fmt.Sprintf("nft rules and elements on one host (%s endpoints, %d hosts)", num(fixedE), r.Hosts),
		"tenants", "count on one host", ruleSeries(tns)); err != nil {
		return err
	}
	var routes []series
	for _, s := range []struct {
		name string
		col  color.Color
		get  func(Point) Counts
	}{{"Romana", colRomana, func(p Point) Counts { return p.Romana }},
		{"per-endpoint", colPerEndpoint, func(p Point) Counts { return p.PerEndpoint }},
		{"per-block", colPerBlock, func(p Point) Counts { return p.PerBlock }}} {
		get := s.get
		routes = append(routes,
			series{name: s.name + ": host", col: s.col, dash: 0, x: swept(eps), curve: eps, y: func(p Point) float64 { return float64(get(p).HostRoutes) }},
			series{name: s.name + ": top-of-rack", col: s.col, dash: 1, x: swept(eps), curve: eps, y: func(p Point) float64 { return float64(get(p).ToRRoutes) }},
			series{name: s.name + ": spine", col: s.col, dash: 2, x: swept(eps), curve: eps, y: func(p Point) float64 { return float64(get(p).SpineRoutes) }})
	}
	if err := logPlot(filepath.Join(dir, PlotRoutes), fmt.Sprintf("routes (%d racks x %d hosts, %s tenants)", r.Racks, r.Hosts/max(r.Racks, 1), num(fixedT)),
		"endpoints in the cluster", "routes", routes); err != nil {
		return err
	}
	ms := func(p Point) float64 { return p.ComputeMS }
	return logPlot(filepath.Join(dir, PlotCompile), "hoststate.Compute wall time for one host (median)", "endpoints / tenants / policies", "ms", []series{
		{name: fmt.Sprintf("vs endpoints (%s tenants)", num(fixedT)), col: colRomana, x: swept(eps), y: ms, curve: eps},
		{name: fmt.Sprintf("vs tenants (%s endpoints)", num(fixedE)), col: colPerBlock, dash: 1, x: swept(tns), y: ms, curve: tns},
		{name: fmt.Sprintf("vs policies (%s)", fixed(pols)), col: colExtra, dash: 2, x: swept(pols), y: ms, curve: pols},
	})
}
