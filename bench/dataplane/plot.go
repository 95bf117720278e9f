package dataplane

import (
	"fmt"
	"image/color"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

var colors = map[string]color.Color{
	Routed:       color.RGBA{R: 0x7f, G: 0x7f, B: 0x7f, A: 0xff},
	Romana:       color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	FlannelVXLAN: color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	FlannelHGW:   color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	VXLAN:        color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
	PTP:          color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
}

// clip is the highest ratio a bar shows: p99 latencies on a busy machine
// reach 30× and would flatten every other bar (the doc's table has the
// values).
const clip = 2.5

// WritePlots writes one grouped bar chart per placement: for each metric,
// a bar per condition with its ratio to the routed path, clipped at 2.5,
// and a line at 1 (the routed path).
func WritePlots(dir string, r Results) error {
	for _, pl := range []struct{ placement, file string }{{Cross, PlotCross}, {Same, PlotSame}} {
		if _, ok := Find(r.Cells, Routed, pl.placement, Gbit1); !ok {
			continue // not measured (QUICK runs cross-host only)
		}
		p := plot.New()
		p.Title.Text = fmt.Sprintf("%s: ratio to the no-rule routed path (same run; latency: lower is better; clipped at %.1f)", pl.placement, clip)
		p.Y.Label.Text = "ratio to routed"
		p.Legend.Top = true
		p.Add(plotter.NewGrid())
		var names []string
		for _, m := range Metrics {
			names = append(names, short[m])
		}
		w := vg.Points(11)
		n := len(r.Conditions)
		for i, c := range r.Conditions {
			var vals plotter.Values
			for _, m := range Metrics {
				cell, _ := Find(r.Cells, c, pl.placement, m)
				vals = append(vals, min(cell.Ratio, clip))
			}
			bars, err := plotter.NewBarChart(vals, w)
			if err != nil {
				return fmt.Errorf("plot %s, %s: %w", pl.file, c, err)
			}
			bars.Color = colors[c]
			bars.LineStyle.Width = 0
			bars.Offset = vg.Length(float64(i)-float64(n-1)/2) * w
			p.Add(bars)
			p.Legend.Add(Labels[c], bars)
		}
		one, err := plotter.NewLine(plotter.XYs{{X: -0.5, Y: 1}, {X: float64(len(Metrics)) - 0.5, Y: 1}})
		if err != nil {
			return err
		}
		one.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		p.Add(one)
		p.NominalX(names...)
		p.Y.Min, p.Y.Max = 0, clip*1.45 // room for the legend
		if err := p.Save(9*vg.Inch, 4.5*vg.Inch, filepath.Join(dir, pl.file)); err != nil {
			return fmt.Errorf("plot %s: %w", pl.file, err)
		}
	}
	return nil
}
