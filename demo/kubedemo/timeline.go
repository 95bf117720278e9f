package main

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// installTimeline says where the install's time went, in seconds after
// the manifests' kubectl apply (t0), from what the API server keeps:
// each Romana pod's creation, its containers' start and its Ready
// condition, its restarts; the bootstrap Job's start, completion and
// failed pods; when the Secrets were created and last written; and the
// kubelet's back-off and mount-failure events. It is pure (the objects
// in, lines out).
func installTimeline(t0 time.Time, pods []corev1.Pod, job *batchv1.Job, secrets []corev1.Secret, events []corev1.Event) []string {
	at := func(t metav1.Time) string {
		if t.IsZero() {
			return "-"
		}
		return fmt.Sprintf("%.0fs", t.Sub(t0).Seconds())
	}
	var out []string
	slices.SortFunc(pods, func(a, b corev1.Pod) int {
		return cmp.Or(a.CreationTimestamp.Compare(b.CreationTimestamp.Time), strings.Compare(a.Name, b.Name))
	})
	for _, p := range pods {
		var ready metav1.Time
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				ready = c.LastTransitionTime
			}
		}
		restarts := int32(0)
		var started metav1.Time
		for _, c := range p.Status.ContainerStatuses {
			restarts += c.RestartCount
			if r := c.State.Running; r != nil {
				started = r.StartedAt
			} else if x := c.State.Terminated; x != nil {
				started = x.StartedAt
			}
		}
		out = append(out, fmt.Sprintf("pod %-32s node %-6s created %5s  container started %5s  ready %5s  restarts %d",
			p.Name, p.Spec.NodeName, at(p.CreationTimestamp), at(started), at(ready), restarts))
	}
	if job != nil {
		var done metav1.Time
		if job.Status.CompletionTime != nil {
			done = *job.Status.CompletionTime
		}
		var start metav1.Time
		if job.Status.StartTime != nil {
			start = *job.Status.StartTime
		}
		out = append(out, fmt.Sprintf("job %s started %s  completed %s  failed pods %d", job.Name, at(start), at(done), job.Status.Failed))
	}
	for _, s := range secrets {
		last := s.CreationTimestamp
		for _, m := range s.ManagedFields {
			if m.Time != nil && m.Time.After(last.Time) {
				last = *m.Time
			}
		}
		out = append(out, fmt.Sprintf("secret %s created %s  last written %s  keys %d", s.Name, at(s.CreationTimestamp), at(last), len(s.Data)))
	}
	counts := map[string]int32{}
	for _, e := range events {
		switch e.Reason {
		case "BackOff", "FailedMount", "BackoffLimitExceeded":
			counts[e.Reason+" "+e.InvolvedObject.Name] += max(e.Count, 1)
		}
	}
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range counts {
			if !yield(k) {
				return
			}
		}
	}) {
		out = append(out, fmt.Sprintf("event %s ×%d", k, counts[k]))
	}
	return out
}

// printTimeline reads the objects installTimeline needs and prints it.
func (d *demo) printTimeline(ctx context.Context, t0 time.Time) {
	cs := d.k.Clientset
	const ns = "romana-system"
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		d.say("  timeline: %v", err)
		return
	}
	job, err := cs.BatchV1().Jobs(ns).Get(ctx, "romana-bootstrap", metav1.GetOptions{})
	if err != nil {
		job = nil
	}
	var secrets []corev1.Secret
	for _, name := range []string{"romana-kube", "romana-join"} {
		if s, err := cs.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{}); err == nil {
			secrets = append(secrets, *s)
		}
	}
	events, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		d.say("  timeline: %v", err)
		return
	}
	d.say("where the install's time went (seconds after kubectl apply at %s):", t0.UTC().Format("15:04:05.000"))
	for _, l := range installTimeline(t0, pods.Items, job, secrets, events.Items) {
		fmt.Fprintf(d.out, "    %s\n", l)
	}
	// What the agents and the bootstrap said of their waiting (their
	// logs, on each node's disk).
	for _, n := range nodeNames {
		out, _ := d.nodes[n].Command("sh", "-c", `grep -h -E 'join token|wrote|waiting' /var/log/pods/romana-system_romana-agent-*/*/*.log /var/log/pods/romana-system_romana-bootstrap-*/*/*.log 2>/dev/null | cut -c1-220 | head -n 12`).CombinedOutput()
		if s := strings.TrimSpace(string(out)); s != "" {
			d.say("  %s: Romana's logs of the wait\n%s", n, indentText(s))
		}
	}
}
