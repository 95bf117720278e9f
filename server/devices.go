package server

import (
	"net/http"
	"slices"
	"strings"

	"github.com/romana/romana/api"
	"github.com/romana/romana/fabric"
)

// deviceRoutes registers the fabric's routes: devices and the static routes
// package fabric computes for them.
func (s *Server) deviceRoutes() {
	s.handle("GET /v1/devices", s.listDevices)
	s.handle("POST /v1/devices", s.putDevice)
	s.handle("GET /v1/devices/{name}", s.getDevice)
	s.handle("DELETE /v1/devices/{name}", s.removeDevice)
	s.handle("GET /v1/fabric/routes", s.fabricRoutes)
}

func (s *Server) listDevices(w http.ResponseWriter, r *http.Request) error {
	out, err := s.reg.ListDevices(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) putDevice(w http.ResponseWriter, r *http.Request) error {
	var in api.Device
	if err := s.decodeBody(w, r, &in); err != nil {
		return err
	}
	out, c, err := s.reg.PutDevice(r.Context(), in)
	if err != nil {
		return err
	}
	writeJSON(w, created(c), out)
	return nil
}

func (s *Server) getDevice(w http.ResponseWriter, r *http.Request) error {
	out, err := s.reg.GetDevice(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) removeDevice(w http.ResponseWriter, r *http.Request) error {
	if err := s.reg.RemoveDevice(r.Context(), r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// fabricRoutes answers GET /v1/fabric/routes?device=NAME[&format=ip|bird|frr]:
// api.FabricRoutes as JSON, or the routes rendered as text in a format.
func (s *Server) fabricRoutes(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	dev, format := q.Get("device"), q.Get("format")
	if dev == "" {
		return api.Errorf(api.ReasonInvalid, "fabric routes: give ?device=NAME")
	}
	if format != "" && !slices.Contains(fabric.Formats, format) {
		return api.Errorf(api.ReasonInvalid, "fabric routes: format %q: use one of %s", format, strings.Join(fabric.Formats, ", "))
	}
	ctx := r.Context()
	d, err := s.reg.GetDevice(ctx, dev)
	if err != nil {
		return err
	}
	nets, err := s.reg.ListNetworks(ctx)
	if err != nil {
		return err
	}
	hosts, err := s.reg.ListHosts(ctx)
	if err != nil {
		return err
	}
	devs, err := s.reg.ListDevices(ctx)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(devs, func(x api.Device) bool { return x.Name == d.Name }) {
		devs = append(devs, d) // removed meanwhile: answer for what we read
	}
	t, err := fabric.Compute(api.Snapshot{Networks: nets, Hosts: hosts, Devices: devs}, dev)
	if err != nil {
		return api.Errorf(api.ReasonInvalid, "fabric routes of device %s: %v", dev, err)
	}
	if format == "" {
		writeJSON(w, http.StatusOK, t.Wire())
		return nil
	}
	text, err := fabric.Render(t, format)
	if err != nil {
		return api.Errorf(api.ReasonInvalid, "fabric routes: %v", err)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	w.Write([]byte(text))
	return nil
}
