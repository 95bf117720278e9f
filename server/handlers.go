package server

import (
	"fmt"
	"net/http"
	"net/netip"

	"github.com/romana/romana/api"
	"github.com/romana/romana/pki"
)

func created(ok bool) int {
	if ok {
		return http.StatusCreated
	}
	return http.StatusOK
}

// Networks.

func (s *Server) listNetworks(w http.ResponseWriter, r *http.Request) error {
	out, err := s.reg.ListNetworks(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) addNetwork(w http.ResponseWriter, r *http.Request) error {
	var in api.Network
	if err := s.decodeBody(w, r, &in); err != nil {
		return err
	}
	out, c, err := s.reg.AddNetwork(r.Context(), in)
	if err != nil {
		return err
	}
	writeJSON(w, created(c), out)
	return nil
}

func (s *Server) getNetwork(w http.ResponseWriter, r *http.Request) error {
	out, err := s.reg.GetNetwork(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) removeNetwork(w http.ResponseWriter, r *http.Request) error {
	if err := s.reg.RemoveNetwork(r.Context(), r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// Hosts.

func (s *Server) listHosts(w http.ResponseWriter, r *http.Request) error {
	out, err := s.reg.ListHosts(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) addHost(w http.ResponseWriter, r *http.Request) error {
	var in api.Host
	if err := s.decodeBody(w, r, &in); err != nil {
		return err
	}
	out, c, err := s.reg.AddHost(r.Context(), in)
	if err != nil {
		return err
	}
	writeJSON(w, created(c), out)
	return nil
}

func (s *Server) getHost(w http.ResponseWriter, r *http.Request) error {
	out, err := s.reg.GetHost(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// removeHost removes a host and revokes its agent's and CNI plugin's
// certificates: the identity is useless at once.
func (s *Server) removeHost(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	if err := s.reg.RemoveHost(r.Context(), name); err != nil {
		return err
	}
	if err := api.ValidateName("host", name); err == nil {
		if _, err := s.revoke(r, nil, []string{pki.Host(name).String(), pki.CNI(name).String()}, "host "+name+" removed"); err != nil {
			return err
		}
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// releaseHostAddresses releases every address of a host: the endpoints of
// a machine that is gone (a deleted Kubernetes node, after its grace
// period). The kube identity may do it only to hosts it registered
// (labelled api.LabelSource=api.SourceKubernetes).
func (s *Server) releaseHostAddresses(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	h, err := s.reg.GetHost(r.Context(), name)
	if err != nil {
		return err
	}
	if c := callerOf(r); c.id.Role == pki.RoleKube && h.Labels[api.LabelSource] != api.SourceKubernetes {
		err := api.Errorf(api.ReasonForbidden, "kube may release the addresses of hosts labelled %s=%s only; host %s is not", api.LabelSource, api.SourceKubernetes, name)
		c.refusal = err
		return err
	}
	addrs, err := s.reg.ListAddresses(r.Context(), api.AddressFilter{Host: name})
	if err != nil {
		return err
	}
	out := api.ReleasedAddresses{Host: name, Released: []string{}}
	for _, a := range addrs {
		// Confined to the host in the deleting transaction: an address
		// re-allocated elsewhere meanwhile is not touched.
		if err := s.reg.ReleaseOwned(r.Context(), a.Name, name); err != nil && !api.IsNotFound(err) {
			return fmt.Errorf("release %s (%s) of host %s: %w", a.Name, a.IP, name, err)
		}
		out.Released = append(out.Released, a.Name)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// Tenants and segments.

func (s *Server) listTenants(w http.ResponseWriter, r *http.Request) error {
	out, err := s.reg.ListTenants(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) addTenant(w http.ResponseWriter, r *http.Request) error {
	var in api.Tenant
	if err := s.decodeBody(w, r, &in); err != nil {
		return err
	}
	out, c, err := s.reg.AddTenant(r.Context(), in)
	if err != nil {
		return err
	}
	writeJSON(w, created(c), out)
	return nil
}

func (s *Server) getTenant(w http.ResponseWriter, r *http.Request) error {
	out, err := s.reg.GetTenant(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// removeTenant removes a tenant without segments. The kube identity may
// remove only the tenants it created (labelled
// api.LabelSource=api.SourceKubernetes): a deleted namespace's.
func (s *Server) removeTenant(w http.ResponseWriter, r *http.Request) error {
	if err := s.kubeOwnsTenant(r, r.PathValue("name")); err != nil {
		return err
	}
	if err := s.reg.RemoveTenant(r.Context(), r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) listAllSegments(w http.ResponseWriter, r *http.Request) error {
	out, err := s.reg.ListSegments(r.Context(), "")
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) listSegments(w http.ResponseWriter, r *http.Request) error {
	t := r.PathValue("tenant")
	if err := api.ValidateName("tenant", t); err != nil {
		return err
	}
	out, err := s.reg.ListSegments(r.Context(), t)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) addSegment(w http.ResponseWriter, r *http.Request) error {
	var in api.Segment
	if err := s.decodeBody(w, r, &in); err != nil {
		return err
	}
	t := r.PathValue("tenant")
	if in.Tenant == "" {
		in.Tenant = t
	}
	if in.Tenant != t {
		return api.Errorf(api.ReasonInvalid, "segment body names tenant %q but the path names tenant %q", in.Tenant, t)
	}
	out, c, err := s.reg.AddSegment(r.Context(), in)
	if err != nil {
		return err
	}
	writeJSON(w, created(c), out)
	return nil
}

func (s *Server) getSegment(w http.ResponseWriter, r *http.Request) error {
	out, err := s.reg.GetSegment(r.Context(), r.PathValue("tenant"), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// kubeOwnsTenant refuses the kube identity a removal in a tenant it did
// not create; other callers pass.
func (s *Server) kubeOwnsTenant(r *http.Request, name string) error {
	c := callerOf(r)
	if c.id.Role != pki.RoleKube {
		return nil
	}
	t, err := s.reg.GetTenant(r.Context(), name)
	if err != nil {
		return err
	}
	if t.Labels[api.LabelSource] != api.SourceKubernetes {
		err := api.Errorf(api.ReasonForbidden, "kube may remove tenants (and their segments) labelled %s=%s only; tenant %s is not", api.LabelSource, api.SourceKubernetes, name)
		c.refusal = err
		return err
	}
	return nil
}

// removeSegment removes a segment without addresses; the kube identity
// only in a tenant it created (kubeOwnsTenant).
func (s *Server) removeSegment(w http.ResponseWriter, r *http.Request) error {
	if err := s.kubeOwnsTenant(r, r.PathValue("tenant")); err != nil {
		return err
	}
	if err := s.reg.RemoveSegment(r.Context(), r.PathValue("tenant"), r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// Addresses.

func (s *Server) allocate(w http.ResponseWriter, r *http.Request) error {
	var in api.AddressRequest
	if err := s.decodeBody(w, r, &in); err != nil {
		return err
	}
	if err := own(r, in.Host); err != nil {
		return err
	}
	in, err := s.resolvePod(r.Context(), in)
	if err != nil {
		return err
	}
	out, c, err := s.reg.Allocate(r.Context(), in)
	if err != nil {
		return err
	}
	writeJSON(w, created(c), out)
	return nil
}

func (s *Server) listAddresses(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	for k := range q {
		switch k {
		case "network", "host", "tenant", "segment":
		default:
			return api.Errorf(api.ReasonInvalid, "unknown query parameter %q (filters: network, host, tenant, segment)", k)
		}
	}
	if err := own(r, q.Get("host")); err != nil {
		return err
	}
	out, err := s.reg.ListAddresses(r.Context(), api.AddressFilter{
		Network: q.Get("network"), Host: q.Get("host"), Tenant: q.Get("tenant"), Segment: q.Get("segment")})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) getAddress(w http.ResponseWriter, r *http.Request) error {
	out, err := s.reg.GetAddress(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	if err := own(r, out.Host); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) release(w http.ResponseWriter, r *http.Request) error {
	if err := s.reg.ReleaseOwned(r.Context(), r.PathValue("name"), ownHost(r)); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func ipParam(r *http.Request) (netip.Addr, error) {
	v := r.URL.Query().Get("ip")
	if v == "" {
		return netip.Addr{}, api.Errorf(api.ReasonInvalid, "query parameter ip is required")
	}
	ip, err := netip.ParseAddr(v)
	if err != nil {
		return netip.Addr{}, api.Errorf(api.ReasonInvalid, "query parameter ip: %q is not an IP address", v)
	}
	return ip, nil
}

func (s *Server) releaseIP(w http.ResponseWriter, r *http.Request) error {
	ip, err := ipParam(r)
	if err != nil {
		return err
	}
	if err := s.reg.ReleaseIPOwned(r.Context(), ip, ownHost(r)); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) decode(w http.ResponseWriter, r *http.Request) error {
	ip, err := ipParam(r)
	if err != nil {
		return err
	}
	out, err := s.reg.Decode(r.Context(), ip)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// Policies.

func (s *Server) listPolicies(w http.ResponseWriter, r *http.Request) error {
	out, err := s.reg.ListPolicies(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) postPolicy(w http.ResponseWriter, r *http.Request) error {
	var in api.Policy
	if err := s.decodeBody(w, r, &in); err != nil {
		return err
	}
	return s.storePolicy(w, r, in)
}

func (s *Server) putPolicy(w http.ResponseWriter, r *http.Request) error {
	var in api.Policy
	if err := s.decodeBody(w, r, &in); err != nil {
		return err
	}
	name := r.PathValue("name")
	if in.Name == "" {
		in.Name = name
	}
	if in.Name != name {
		return api.Errorf(api.ReasonInvalid, "policy body is named %q but the path names %q", in.Name, name)
	}
	return s.storePolicy(w, r, in)
}

func (s *Server) storePolicy(w http.ResponseWriter, r *http.Request, in api.Policy) error {
	out, c, err := s.reg.PutPolicy(r.Context(), in)
	if err != nil {
		return err
	}
	writeJSON(w, created(c), out)
	return nil
}

func (s *Server) getPolicy(w http.ResponseWriter, r *http.Request) error {
	out, err := s.reg.GetPolicy(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) removePolicy(w http.ResponseWriter, r *http.Request) error {
	if err := s.reg.RemovePolicy(r.Context(), r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// Snapshot and watch.

func (s *Server) snapshot(w http.ResponseWriter, r *http.Request) error {
	out, err := s.reg.Snapshot(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
