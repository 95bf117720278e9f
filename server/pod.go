package server

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"strings"

	"github.com/romana/romana/api"
)

// podRoutes registers the pod records' routes.
func (s *Server) podRoutes() {
	s.handle("GET /v1/pods", s.listPods)
	s.handle("GET /v1/pods/{namespace}/{name}", s.getPod)
	s.handle("PUT /v1/pods/{namespace}/{name}", s.putPod)
	s.handle("DELETE /v1/pods/{namespace}/{name}", s.removePod)
}

// listPods answers GET /v1/pods[?namespace=NS].
func (s *Server) listPods(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	for k := range q {
		if k != "namespace" {
			return api.Errorf(api.ReasonInvalid, "unknown query parameter %q (filter: namespace)", k)
		}
	}
	ns := q.Get("namespace")
	if ns != "" {
		if err := api.ValidateName("namespace", ns); err != nil {
			return err
		}
	}
	out, err := s.reg.ListPods(r.Context(), ns)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) putPod(w http.ResponseWriter, r *http.Request) error {
	var in api.Pod
	if err := s.decodeBody(w, r, &in); err != nil {
		return err
	}
	ns, name := r.PathValue("namespace"), r.PathValue("name")
	if in.Namespace == "" && in.Name == "" {
		in.Namespace, in.Name = ns, name
	}
	if in.Namespace != ns || in.Name != name {
		return api.Errorf(api.ReasonInvalid, "pod body is %s but the path names %s/%s", in.Key(), ns, name)
	}
	out, c, err := s.reg.PutPod(r.Context(), in)
	if err != nil {
		return err
	}
	writeJSON(w, created(c), out)
	return nil
}

func (s *Server) getPod(w http.ResponseWriter, r *http.Request) error {
	out, err := s.reg.GetPod(r.Context(), r.PathValue("namespace"), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) removePod(w http.ResponseWriter, r *http.Request) error {
	if err := s.reg.RemovePod(r.Context(), r.PathValue("namespace"), r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// resolvePod completes an address request that names a pod: it adds the
// pod's attributes, and takes the tenant or segment the request leaves
// empty from the pod's record. The record is required even when the
// request names both (the attributes make the address a member of the
// address sets that list the pod, api.AddressSet.Pods, and the controller
// writes those before the record: a pod with a record has its
// memberships). A record not there yet is waited for up to
// Config.PodWait (the controller writes it when it sees the pod, which may
// be after the kubelet asks for the pod's network); then the request fails
// with a retriable Unavailable error naming the pod. An address already
// allocated under the request's name for this pod is answered without the
// record (a retried ADD after the pod's record was removed). The
// attributes api.AttrK8s* are romanad's to set: a request giving them
// itself is refused.
func (s *Server) resolvePod(ctx context.Context, in api.AddressRequest) (api.AddressRequest, error) {
	for k := range in.Attrs {
		if strings.HasPrefix(k, "k8s.") {
			return in, api.Errorf(api.ReasonInvalid, "address %s: attribute %q: the k8s.* attributes are set by romanad from the pod's record; name the pod in \"pod\" instead", in.Name, k)
		}
	}
	if in.Pod == "" {
		return in, nil
	}
	ns, name, err := api.ParsePodKey(in.Pod)
	if err != nil {
		return in, api.Errorf(api.ReasonInvalid, "address %s: %v", in.Name, err)
	}
	attrs := maps.Clone(in.Attrs)
	if attrs == nil {
		attrs = map[string]string{}
	}
	attrs[api.AttrK8sNamespace], attrs[api.AttrK8sPod] = ns, name
	in.Attrs = attrs
	fill := func(tenant, segment string) {
		if in.Tenant == "" {
			in.Tenant = tenant
		}
		if in.Segment == "" {
			in.Segment = segment
		}
	}
	if len(in.PodUID) > 128 {
		return in, api.Errorf(api.ReasonInvalid, "address %s: podUID longer than 128 characters", in.Name)
	}
	p, err := s.reg.GetPod(ctx, ns, name)
	stale := err == nil && in.PodUID != "" && p.UID != "" && p.UID != in.PodUID
	if api.IsNotFound(err) || stale {
		if a, aerr := s.reg.GetAddress(ctx, in.Name); aerr == nil && a.Host == in.Host &&
			a.Attrs[api.AttrK8sNamespace] == ns && a.Attrs[api.AttrK8sPod] == name {
			fill(a.Tenant, a.Segment)
			return in, nil
		}
		wctx, cancel := context.WithTimeout(ctx, s.podWait)
		p, err = s.reg.WaitPodUID(wctx, ns, name, in.PodUID)
		cancel()
		switch {
		case ctx.Err() != nil:
		case api.IsNotFound(err):
			return in, api.Errorf(api.ReasonUnavailable,
				"no pod record for %s/%s after waiting %s: is romana-kube running? (it records each pod's tenant and segment; try again)", ns, name, s.podWait)
		case api.ReasonOf(err) == api.ReasonConflict:
			return in, api.Errorf(api.ReasonUnavailable,
				"the pod record of %s/%s is of an earlier pod (not uid %s) after waiting %s: is romana-kube running? (try again)", ns, name, in.PodUID, s.podWait)
		}
	}
	if err != nil {
		if ctx.Err() != nil && !errors.As(err, new(*api.Error)) {
			return in, ctx.Err()
		}
		return in, err
	}
	fill(p.Tenant, p.Segment)
	if p.UID != "" {
		attrs[api.AttrK8sUID] = p.UID
	}
	return in, nil
}
