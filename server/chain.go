package server

import (
	"net/http"

	"github.com/romana/romana/api"
)

// chainRoutes registers the service chains' routes.
func (s *Server) chainRoutes() {
	s.handle("GET /v1/chains", s.listChains)
	s.handle("POST /v1/chains", s.addChain)
	s.handle("GET /v1/chains/{name}", s.getChain)
	s.handle("DELETE /v1/chains/{name}", s.removeChain)
}

func (s *Server) listChains(w http.ResponseWriter, r *http.Request) error {
	out, err := s.reg.ListChains(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) addChain(w http.ResponseWriter, r *http.Request) error {
	var in api.Chain
	if err := s.decodeBody(w, r, &in); err != nil {
		return err
	}
	out, c, err := s.reg.AddChain(r.Context(), in)
	if err != nil {
		return err
	}
	writeJSON(w, created(c), out)
	return nil
}

func (s *Server) getChain(w http.ResponseWriter, r *http.Request) error {
	out, err := s.reg.GetChain(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) removeChain(w http.ResponseWriter, r *http.Request) error {
	if err := s.reg.RemoveChain(r.Context(), r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
