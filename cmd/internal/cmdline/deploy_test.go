package cmdline

import (
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/romana/romana/config"
	"github.com/romana/romana/deploy"
)

// TestDeployConfigMaps: every configuration file in deploy/kubernetes's
// ConfigMaps is one its command accepts (config.Parse refuses unknown keys
// and bad values), and every flag the manifests' args give exists.
func TestDeployConfigMaps(t *testing.T) {
	nop := func(context.Context, any) error { return nil }
	cmds := map[string]func() *cobra.Command{
		"romanad.yaml": func() *cobra.Command {
			return NewRomanad(func(ctx context.Context, f *Romanad) error { return nop(ctx, f) })
		},
		"romana-agent.yaml": func() *cobra.Command {
			return NewAgent(func(ctx context.Context, f *Agent) error { return nop(ctx, f) })
		},
		"romana-kube.yaml": func() *cobra.Command { return NewKube(func(ctx context.Context, f *Kube) error { return nop(ctx, f) }) },
	}
	m, err := deploy.Manifests()
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(m), -1) {
		if !strings.Contains(doc, "\nkind: ConfigMap\n") {
			continue
		}
		var cm corev1.ConfigMap
		if err := yaml.UnmarshalStrict([]byte(doc), &cm); err != nil {
			t.Fatal(err)
		}
		for key, data := range cm.Data {
			mk, ok := cmds[key]
			if !ok {
				t.Errorf("ConfigMap %s: key %s is no command's config file", cm.Name, key)
				continue
			}
			if err := config.Parse(key, []byte(data), mk().Flags()); err != nil {
				t.Errorf("ConfigMap %s, %s: %v", cm.Name, key, err)
			}
			seen++
		}
	}
	if seen != len(cmds) {
		t.Errorf("checked %d config files, want %d", seen, len(cmds))
	}

	// The args: --flag=value of the command each container runs.
	subs := map[string]func() *cobra.Command{
		"install-cni": func() *cobra.Command {
			return NewInstallCNI(func(context.Context, *InstallCNI) error { return nil })
		},
		"bootstrap": func() *cobra.Command {
			return NewKubeBootstrap(func(context.Context, *KubeBootstrap) error { return nil })
		},
	}
	image := regexp.MustCompile(`image: localhost/romana/([a-z-]+):`)
	args := regexp.MustCompile(`(?s)args:\n((?:\s+- [^\n]+\n)+)`)
	checked := 0
	for _, doc := range regexp.MustCompile(`(?m)^\s*- name: `).Split(string(m), -1) {
		im, am := image.FindStringSubmatch(doc), args.FindStringSubmatch(doc)
		if im == nil || am == nil {
			continue
		}
		var list []string
		for _, l := range strings.Split(strings.TrimSpace(am[1]), "\n") {
			list = append(list, strings.TrimPrefix(strings.TrimSpace(l), "- "))
		}
		var c *cobra.Command
		if mk, ok := subs[list[0]]; ok {
			c, list = mk(), list[1:]
		} else {
			c = cmds[im[1]+".yaml"]()
		}
		for _, a := range list {
			name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
			if !strings.HasPrefix(a, "--") || c.Flags().Lookup(name) == nil {
				t.Errorf("%s: %s has no flag %q", im[1], c.Name(), a)
			}
		}
		checked++
	}
	if checked != 5 { // romanad, install-cni, the agent, romana-kube, bootstrap
		t.Errorf("checked the args of %d containers, want 5", checked)
	}
}
