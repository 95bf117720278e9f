package main

import (
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestInstallTimeline: seconds after the apply, restarts summed over a
// pod's containers, a Secret's last write from its managed fields, and
// only the back-off and mount events counted.
func TestInstallTimeline(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(s int) metav1.Time { return metav1.NewTime(t0.Add(time.Duration(s) * time.Second)) }
	started := at(14)
	agent := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "romana-agent-x", CreationTimestamp: at(0)},
		Spec: corev1.PodSpec{NodeName: "node1"},
		Status: corev1.PodStatus{
			Conditions:        []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: at(16)}},
			ContainerStatuses: []corev1.ContainerStatus{{RestartCount: 2, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started}}}}}}
	done, start := at(17), at(0)
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "romana-bootstrap"}, Status: batchv1.JobStatus{StartTime: &start, CompletionTime: &done}}
	written := at(14)
	sec := corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "romana-join", CreationTimestamp: at(2),
		ManagedFields: []metav1.ManagedFieldsEntry{{Time: &written}}}, Data: map[string][]byte{"node1": nil}}
	events := []corev1.Event{
		{Reason: "BackOff", Count: 2, InvolvedObject: corev1.ObjectReference{Name: "romana-agent-x"}},
		{Reason: "Scheduled", InvolvedObject: corev1.ObjectReference{Name: "romana-agent-x"}},
	}
	got := strings.Join(installTimeline(t0, []corev1.Pod{agent}, job, []corev1.Secret{sec}, events), "\n")
	for _, want := range []string{
		"pod romana-agent-x                   node node1  created    0s  container started   14s  ready   16s  restarts 2",
		"job romana-bootstrap started 0s  completed 17s  failed pods 0",
		"secret romana-join created 2s  last written 14s  keys 1",
		"event BackOff romana-agent-x ×2",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("timeline lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "Scheduled") {
		t.Errorf("timeline counts other events:\n%s", got)
	}
}
