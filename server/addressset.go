package server

import (
	"net/http"

	"github.com/romana/romana/api"
)

// maxAddressSetBody is the request body limit of an address set: its
// largest (api.MaxAddressSetSize addresses) with room for formatting, so
// that a set too large is answered with a 400 that says by how much
// rather than a bare 413.
const maxAddressSetBody = 4 << 20

// addressSetRoutes registers the address sets' routes.
func (s *Server) addressSetRoutes() {
	s.handle("GET /v1/addresssets", s.listAddressSets)
	s.handle("GET /v1/addresssets/{name}", s.getAddressSet)
	s.handle("PUT /v1/addresssets/{name}", s.putAddressSet)
	s.handle("DELETE /v1/addresssets/{name}", s.removeAddressSet)
}

func (s *Server) listAddressSets(w http.ResponseWriter, r *http.Request) error {
	out, err := s.reg.ListAddressSets(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// putAddressSet creates or replaces a set (201 when created, else 200),
// answering with its canonical form: addresses unmapped, sorted, distinct.
func (s *Server) putAddressSet(w http.ResponseWriter, r *http.Request) error {
	var in api.AddressSet
	if err := s.decodeBodyLimit(w, r, &in, max(s.maxBody, maxAddressSetBody)); err != nil {
		return err
	}
	name := r.PathValue("name")
	if in.Name == "" {
		in.Name = name
	}
	if in.Name != name {
		return api.Errorf(api.ReasonInvalid, "address set body is named %q but the path names %q", in.Name, name)
	}
	out, c, err := s.reg.PutAddressSet(r.Context(), in)
	if err != nil {
		return err
	}
	writeJSON(w, created(c), out)
	return nil
}

func (s *Server) getAddressSet(w http.ResponseWriter, r *http.Request) error {
	out, err := s.reg.GetAddressSet(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) removeAddressSet(w http.ResponseWriter, r *http.Request) error {
	if err := s.reg.RemoveAddressSet(r.Context(), r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
