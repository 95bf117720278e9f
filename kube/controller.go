package kube

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/network-policy-api/apis/v1alpha2"
	npclient "sigs.k8s.io/network-policy-api/pkg/client/clientset/versioned"
	npinformers "sigs.k8s.io/network-policy-api/pkg/client/informers/externalversions"
)

// Controller follows the Kubernetes objects and keeps romanad in step:
// informers only record that something changed and kick; one goroutine
// (Run) lists the informers' caches, computes the Desired state and lets
// the Reconciler write the difference. Nothing is written before every
// informer has synced.
type Controller struct {
	Config Config
	Kube   kubernetes.Interface
	// Policy is the client of ClusterNetworkPolicies; nil runs without
	// them (the CRD is not installed).
	Policy npclient.Interface
	// Compile turns a State into policies and address sets (netpol).
	Compile    func(State) PolicySet
	Reconciler *Reconciler
	Log        *slog.Logger
	// MinInterval is the least time between two syncs (changes arriving
	// meanwhile are applied together); Resync re-reads romanad's objects
	// this often to repair what others changed.
	MinInterval, Resync time.Duration
	// OnSync, when set, is called after each sync (tests, metrics).
	OnSync func(Desired, error)
	// Addresses, when set, is romanad's snapshot and watch: a pod whose
	// status has no IP yet takes the addresses romanad allocated for it
	// (see addresses.go), so that policies select it from its CNI ADD on.
	Addresses AddressSource
}

// Run runs the controller until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	log := c.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if c.Reconciler.Log == nil {
		c.Reconciler.Log = log
	}
	kick := make(chan struct{}, 1)
	poke := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke() },
		UpdateFunc: func(any, any) { poke() },
		DeleteFunc: func(any) { poke() },
	}
	f := informers.NewSharedInformerFactoryWithOptions(c.Kube, 0, informers.WithTransform(stripManagedFields))
	nodes := f.Core().V1().Nodes()
	nss := f.Core().V1().Namespaces()
	pods := f.Core().V1().Pods()
	nps := f.Networking().V1().NetworkPolicies()
	var synced []cache.InformerSynced
	for _, inf := range []cache.SharedIndexInformer{nodes.Informer(), nss.Informer(), pods.Informer(), nps.Informer()} {
		if _, err := inf.AddEventHandler(handler); err != nil {
			return fmt.Errorf("add informer handler: %w", err)
		}
		synced = append(synced, inf.HasSynced)
	}
	listCNPs := func() ([]v1alpha2.ClusterNetworkPolicy, error) { return nil, nil }
	if c.Policy != nil {
		pf := npinformers.NewSharedInformerFactoryWithOptions(c.Policy, 0, npinformers.WithTransform(stripManagedFields))
		cnps := pf.Policy().V1alpha2().ClusterNetworkPolicies()
		if _, err := cnps.Informer().AddEventHandler(handler); err != nil {
			return fmt.Errorf("add informer handler: %w", err)
		}
		synced = append(synced, cnps.Informer().HasSynced)
		listCNPs = func() ([]v1alpha2.ClusterNetworkPolicy, error) {
			l, err := cnps.Lister().List(labels.Everything())
			return deref(l), err
		}
		pf.Start(ctx.Done())
		defer pf.Shutdown()
	}
	f.Start(ctx.Done())
	defer f.Shutdown()
	var follower *addressFollower
	if c.Addresses != nil {
		follower = &addressFollower{src: c.Addresses, log: log, changed: poke}
		fctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); follower.run(fctx) }()
		defer func() { stop(); <-done }()
	}
	log.Info("waiting for the informers' initial lists")
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return ctx.Err()
	}
	log.Info("informers synced; following Kubernetes")
	state := func() (State, error) {
		var st State
		n, err := nodes.Lister().List(labels.Everything())
		if err != nil {
			return st, err
		}
		ns, err := nss.Lister().List(labels.Everything())
		if err != nil {
			return st, err
		}
		p, err := pods.Lister().List(labels.Everything())
		if err != nil {
			return st, err
		}
		np, err := nps.Lister().List(labels.Everything())
		if err != nil {
			return st, err
		}
		cnp, err := listCNPs()
		if err != nil {
			return st, err
		}
		pods := deref(p)
		if follower != nil {
			if idx, ok := follower.pods(); ok {
				pods = WithAllocatedIPs(pods, idx)
			}
		}
		return State{Nodes: deref(n), Namespaces: deref(ns), Pods: pods, NetworkPolicies: deref(np), ClusterNetworkPolicies: cnp}, nil
	}
	poke()
	var (
		timer    = time.NewTimer(time.Hour)
		lastSync time.Time
		backoff  time.Duration
		problems []string
		resyncAt = time.Now().Add(c.Resync)
	)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-kick:
		case <-timer.C:
		}
		if wait := c.MinInterval - time.Since(lastSync); wait > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
		}
		// Drain a kick that came meanwhile: this sync covers it.
		select {
		case <-kick:
		default:
		}
		lastSync = time.Now()
		if c.Resync > 0 && !lastSync.Before(resyncAt) {
			c.Reconciler.have = nil
			resyncAt = lastSync.Add(c.Resync)
		}
		st, err := state()
		if err != nil {
			return fmt.Errorf("list informer caches: %w", err)
		}
		want := Desire(c.Config, st, c.Compile)
		if !slices.Equal(want.Problems, problems) {
			for _, p := range want.Problems {
				if !slices.Contains(problems, p) {
					log.Warn("problem", "what", p)
				}
			}
			problems = want.Problems
		}
		next, err := c.Reconciler.Sync(ctx, want, lastSync)
		if c.OnSync != nil {
			c.OnSync(want, err)
		}
		switch {
		case err != nil && ctx.Err() != nil:
			return nil
		case err != nil:
			backoff = min(max(2*backoff, 200*time.Millisecond), 30*time.Second)
			log.Warn("sync failed; retrying", "in", backoff, "err", err)
			timer.Reset(backoff)
		default:
			backoff = 0
			wait := time.Until(resyncAt)
			if c.Resync <= 0 {
				wait = time.Hour
			}
			if !next.IsZero() {
				wait = min(wait, time.Until(next))
			}
			timer.Reset(max(wait, 0))
		}
	}
}

// HasCNP reports whether the API server serves ClusterNetworkPolicies.
func HasCNP(kc kubernetes.Interface) (bool, error) {
	res, err := kc.Discovery().ServerResourcesForGroupVersion(v1alpha2.GroupVersion.String())
	if err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("discover %s: %w", v1alpha2.GroupVersion, err)
	}
	for _, r := range res.APIResources {
		if r.Name == "clusternetworkpolicies" {
			return true, nil
		}
	}
	return false, nil
}

// stripManagedFields drops what the controller never reads, to keep the
// informers' caches small.
func stripManagedFields(obj any) (any, error) {
	if a, err := meta.Accessor(obj); err == nil {
		a.SetManagedFields(nil)
		a.SetAnnotations(nil)
	}
	return obj, nil
}

func deref[T any](in []*T) []T {
	out := make([]T, len(in))
	for i, p := range in {
		out[i] = *p
	}
	return out
}
