package conformance

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestParseGinkgo: only It specs matching the focus count; a spec left out
// by --ginkgo.skip gets its skip's cause, a runtime skip keeps its message,
// every non-passed, non-skipped state is a failure with its message.
func TestParseGinkgo(t *testing.T) {
	report := `[{"SuiteDescription":"Kubernetes e2e suite","SpecReports":[
{"LeafNodeType":"SynchronizedBeforeSuite","State":"passed"},
{"ContainerHierarchyTexts":["[sig-network] Netpol","NetworkPolicy between server and client"],"LeafNodeType":"It","LeafNodeText":"should support allow-all policy [Feature:NetworkPolicy]","State":"passed","RunTime":61000000000},
{"ContainerHierarchyTexts":["[sig-network] Netpol [Feature:SCTPConnectivity]","NetworkPolicy between server and client using SCTP"],"LeafNodeType":"It","LeafNodeText":"should support a 'default-deny-ingress' policy","State":"skipped"},
{"ContainerHierarchyTexts":["[sig-network] Netpol","x"],"LeafNodeType":"It","LeafNodeText":"runtime skip","State":"skipped","Failure":{"Message":"Only supported for providers [gce]\nmore"}},
{"ContainerHierarchyTexts":["[sig-network] Netpol","x"],"LeafNodeType":"It","LeafNodeText":"times out","State":"timedout","Failure":{"Message":"context deadline exceeded"}},
{"ContainerHierarchyTexts":["[sig-storage] Volumes"],"LeafNodeType":"It","LeafNodeText":"other","State":"skipped"}
]}]`
	skips := []Skip{{Pattern: regexp.MustCompile(`SCTPConnectivity`), Cause: "no SCTP"}}
	cases, err := ParseGinkgo([]byte(report), "NP", regexp.MustCompile(`\[sig-network\] Netpol`), skips)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range cases {
		got = append(got, c.State+" "+c.Reason)
	}
	want := []string{"passed ", "skipped no SCTP", "skipped Only supported for providers [gce]", "failed timedout: context deadline exceeded"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("cases:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if cases[0].Duration != 61*time.Second {
		t.Errorf("duration %v", cases[0].Duration)
	}
	if p, f, s := Count(cases); p != 1 || f != 1 || s != 2 {
		t.Errorf("Count = %d, %d, %d", p, f, s)
	}
}

// TestParseGoTest: cases at depth 2; a failure names its failing leaf
// subtests with their FAILED lines; a test skipped with -test.skip (never
// reported) is added with its cause; one that never ended is a failure.
func TestParseGoTest(t *testing.T) {
	stream := `{"Action":"run","Test":"TestConformance"}
{"Action":"run","Test":"TestConformance/A"}
{"Action":"run","Test":"TestConformance/A/step_1"}
{"Action":"output","Test":"TestConformance/A/step_1","Output":"    pokesctp.go:20: SKIPPED SCTP probe from a/b to 10.0.0.1:9003\n"}
{"Action":"pass","Test":"TestConformance/A/step_1","Elapsed":1}
{"Action":"pass","Test":"TestConformance/A","Elapsed":2.5}
{"Action":"run","Test":"TestConformance/B"}
{"Action":"run","Test":"TestConformance/B/step_1"}
{"Action":"output","Test":"TestConformance/B/step_1","Output":"    helper.go:96: FAILED Command was [/agnhost connect --protocol=sctp 10.1.128.1:9003]\n"}
{"Action":"output","Test":"TestConformance/B/step_1","Output":"    helper.go:96: FAILED Command was [/agnhost connect --protocol=sctp 10.1.128.1:9003]\n"}
{"Action":"output","Test":"TestConformance/B/step_1","Output":"    noise\n"}
{"Action":"fail","Test":"TestConformance/B/step_1","Elapsed":3}
{"Action":"fail","Test":"TestConformance/B","Elapsed":3}
{"Action":"run","Test":"TestConformance/C"}
{"Action":"output","Test":"TestConformance/C","Output":"    suite.go:1: Skipping C: unsupported feature\n"}
{"Action":"output","Test":"TestConformance/C","Output":"--- SKIP: TestConformance/C (0.00s)\n"}
{"Action":"skip","Test":"TestConformance/C"}
{"Action":"run","Test":"TestConformance/D"}
{"Action":"fail","Test":"TestConformance","Elapsed":9}
`
	skips := []Skip{{Pattern: regexp.MustCompile(`SCTP$`), Cause: "no SCTP"}}
	cases, err := ParseGoTest(strings.NewReader(stream), "CNP", 2, []string{"TestConformance/A", "TestConformance/ESCTP"}, skips)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range cases {
		got = append(got, c.Name+" "+c.State+" "+c.Reason)
	}
	want := []string{
		"TestConformance/A passed ",
		"TestConformance/B failed step_1: helper.go:96: FAILED Command was [/agnhost connect --protocol=sctp 10.1.128.1:9003]",
		"TestConformance/C skipped suite.go:1: Skipping C: unsupported feature",
		"TestConformance/D failed no result (the run ended before this test did)",
		"TestConformance/ESCTP skipped no SCTP",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("cases:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if p := strings.Join(cases[1].FailedProtocols, ","); p != "sctp" {
		t.Errorf("B's failed protocols: %q, want sctp (once)", p)
	}
	var b bytes.Buffer
	Render(&b, "CNP", cases)
	for _, s := range []string{"1 passed, 2 failed, 2 skipped (of 5).", "| TestConformance/B | step_1: helper.go:96: FAILED Command was [/agnhost connect --protocol=sctp 10.1.128.1:9003] |", "- TestConformance/A (2 s; 1 SCTP probes not made)"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("Render lacks %q:\n%s", s, b.String())
		}
	}
}
