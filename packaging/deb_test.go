// Package packaging holds the systemd units, example configs and nfpm
// package definitions of romanad, romana-agent and romana; this test checks
// the .deb files `make deb` builds (run it with `make deb-test`).
package packaging

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/romana/romana/expect"
	"github.com/romana/romana/sim/simtest"
)

// TestDebs installs the packages in $ROMANA_DEBS into a scratch root with
// dpkg --root, checks their files, modes, conffiles and units, then runs
// romanad and romana-agent from their units' ExecStart lines (paths moved
// into the scratch root; the units' capability bounding set, no_new_privs,
// umask and directories applied with setpriv) in a network namespace the
// test creates: romanad on its loopback, the CLI over the unix socket and
// over TLS with the admin credential romanad wrote, an agent joining with a
// token from its EnvironmentFile and programming the namespace.
func TestDebs(t *testing.T) {
	dir := os.Getenv("ROMANA_DEBS")
	if dir == "" {
		t.Skip("ROMANA_DEBS is not set: run `make deb-test`, which builds the packages first")
	}
	simtest.Require(t, "dpkg", "dpkg-deb", "setpriv", "nsenter", "nft")
	debs, _ := filepath.Glob(filepath.Join(dir, "*.deb"))
	var names []string
	for _, d := range debs {
		names = append(names, strings.SplitN(filepath.Base(d), "_", 2)[0])
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"romana", "romana-agent", "romanad"}) {
		t.Fatalf("packages in %s: %v, want romana, romana-agent, romanad", dir, names)
	}

	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates"} {
		must(t, os.MkdirAll(filepath.Join(root, d), 0o755))
	}
	must(t, os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), nil, 0o644))
	dpkgInstall := func() {
		t.Helper()
		// Maintainer scripts run without chroot (the scratch root has no
		// shell) with DPKG_ROOT set: ours then do nothing. nftables is not
		// in the scratch root's dpkg database: --force-depends.
		run(t, "dpkg", append([]string{"--root=" + root, "--force-script-chrootless", "--force-depends", "--log=/dev/null", "-i"}, debs...)...)
	}
	dpkgInstall()

	t.Run("files", func(t *testing.T) {
		for _, f := range []struct {
			path string
			mode os.FileMode
		}{
			{"usr/bin/romanad", 0o755}, {"usr/bin/romana-agent", 0o755}, {"usr/bin/romana", 0o755},
			{"opt/cni/bin/romana-cni", 0o755},
			{"lib/systemd/system/romanad.service", 0o644}, {"lib/systemd/system/romana-agent.service", 0o644},
			{"etc/romana", 0o755 | os.ModeDir},
			{"etc/romana/romanad.yaml", 0o644}, {"etc/romana/romana-agent.yaml", 0o644},
			{"usr/share/doc/romana-agent/examples/10-romana.conflist", 0o644},
			{"usr/share/doc/romana-agent/examples/romana-agent.env", 0o644},
		} {
			st, err := os.Stat(filepath.Join(root, f.path))
			if err != nil {
				t.Error(err)
				continue
			}
			sys := st.Sys().(*syscall.Stat_t)
			if st.Mode() != f.mode || sys.Uid != 0 || sys.Gid != 0 {
				t.Errorf("/%s: mode %v owner %d:%d, want %v root:root", f.path, st.Mode(), sys.Uid, sys.Gid, f.mode)
			}
		}
		// Nothing lands in the runtime's CNI config dir: the conflist is
		// an example to copy.
		if _, err := os.Stat(filepath.Join(root, "etc/cni")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("/etc/cni exists in the package (err %v)", err)
		}
		for pkg, conf := range map[string]string{"romanad": "/etc/romana/romanad.yaml", "romana-agent": "/etc/romana/romana-agent.yaml"} {
			out := run(t, "dpkg", "--root="+root, "-s", pkg)
			if !regexp.MustCompile(`(?m)^Conffiles:\n ` + regexp.QuoteMeta(conf) + ` [0-9a-f]{32}$`).MatchString(out) {
				t.Errorf("%s: %s is not a conffile:\n%s", pkg, conf, out)
			}
		}
		if out := run(t, "dpkg", "--root="+root, "-s", "romana-agent"); !strings.Contains(out, "Depends: nftables") {
			t.Errorf("romana-agent does not depend on nftables:\n%s", out)
		}
		// The CNI plugin is a working binary.
		cmd := exec.Command(filepath.Join(root, "opt/cni/bin/romana-cni"))
		cmd.Env = []string{"CNI_COMMAND=VERSION"}
		out, err := cmd.Output()
		if err != nil || !strings.Contains(string(out), `"supportedVersions"`) {
			t.Errorf("romana-cni VERSION: %v: %s", err, out)
		}
	})

	t.Run("conffile kept on reinstall", func(t *testing.T) {
		p := filepath.Join(root, "etc/romana/romana-agent.yaml")
		orig, err := os.ReadFile(p)
		must(t, err)
		edited := append(slices.Clip(orig), "# edited by the operator\n"...)
		must(t, os.WriteFile(p, edited, 0o644))
		dpkgInstall()
		got, err := os.ReadFile(p)
		must(t, err)
		if string(got) != string(edited) {
			t.Fatalf("reinstalling replaced the edited %s", p)
		}
		must(t, os.WriteFile(p, orig, 0o644))
	})

	units := map[string]unit{}
	for _, name := range []string{"romanad", "romana-agent"} {
		units[name] = readUnit(t, filepath.Join(root, "lib/systemd/system", name+".service"))
	}

	t.Run("systemd-analyze verify", func(t *testing.T) {
		if _, err := exec.LookPath("systemd-analyze"); err != nil {
			simtest.Need(t, false, "no systemd-analyze")
		}
		// Copies whose ExecStart names the scratch root's binaries (verify
		// checks that they exist); any message is a failure, as verify
		// exits 0 on unknown keys.
		tmp := t.TempDir()
		var files []string
		for name, u := range units {
			text := strings.Replace(u.text, "ExecStart=/", "ExecStart="+root+"/", 1)
			f := filepath.Join(tmp, name+".service")
			must(t, os.WriteFile(f, []byte(text), 0o644))
			files = append(files, f)
		}
		out, err := exec.Command("systemd-analyze", append([]string{"verify", "--man=no"}, files...)...).CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
		for _, f := range files {
			out, _ := exec.Command("systemd-analyze", "security", "--offline=yes", f).CombinedOutput()
			m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`).FindSubmatch(out)
			if m == nil {
				t.Errorf("systemd-analyze security %s: no exposure level:\n%s", f, out)
				continue
			}
			level, _ := strconv.ParseFloat(string(m[1]), 64)
			t.Logf("systemd-analyze security: %s exposure %.1f", filepath.Base(f), level)
			if level > 3.0 {
				t.Errorf("%s: exposure %.1f, want at most 3.0 (the units' hardening was weakened)", filepath.Base(f), level)
			}
		}
	})

	// Run the daemons as their units would.
	lab := simtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	host, err := lab.AddHost(ctx, "h1", netip.MustParsePrefix("192.168.77.11/24"))
	must(t, err)

	romanadConf := rewriteConfig(t, root, "etc/romana/romanad.yaml", nil)
	d := startUnit(t, root, host.Namespace.Path, units["romanad"], romanadConf, nil)
	if got := d.caps(t); got.bnd != 0 || got.eff != 0 {
		t.Errorf("romanad capabilities: bounding %#x effective %#x, want none", got.bnd, got.eff)
	}
	sock := filepath.Join(root, "run/romana/romanad.sock")
	admin := filepath.Join(root, "etc/romana/admin.conf")
	expect.Eventually(t, "romanad serving on its unix socket", 20*time.Second, func() error {
		if d.exited() {
			t.Fatalf("romanad exited:\n%s", d.log())
		}
		_, err := cli(root, host.Namespace.Path, "--server", "unix://"+sock, "network", "list")
		return err
	})
	for path, mode := range map[string]os.FileMode{sock: 0o600 | os.ModeSocket, admin: 0o600, filepath.Join(root, "var/lib/romana/pki/ca.key"): 0o600} {
		if st, err := os.Stat(path); err != nil || st.Mode() != mode {
			t.Errorf("%s: %v %v, want mode %v", path, st.Mode(), err, mode)
		}
	}
	romana := func(args ...string) string {
		t.Helper()
		out, err := cli(root, host.Namespace.Path, append([]string{"--config", admin}, args...)...)
		if err != nil {
			t.Fatalf("romana %s: %v\n%s\nromanad:\n%s", strings.Join(args, " "), err, out, d.log())
		}
		return out
	}
	romana("network", "add", "main", "--cidr", "10.0.0.0/8", "--field", "host=8", "--field", "tenant=8", "--field", "segment=4")
	out, err := cli(root, host.Namespace.Path, "--server", "unix://"+sock, "network", "list")
	if err != nil || !strings.Contains(out, "10.0.0.0/8") {
		t.Fatalf("romana network list over the unix socket: %v\n%s", err, out)
	}
	t.Logf("romana --server unix://.../romanad.sock network list:\n%s", out)
	tokenOut := romana("host", "add", "h1", "--ip", "192.168.77.11")
	token := regexp.MustCompile(`rmn1\.[0-9A-Za-z._-]+`).FindString(tokenOut)
	if token == "" {
		t.Fatalf("no join token in:\n%s", tokenOut)
	}

	// The agent: the token in its EnvironmentFile, as docs/install.md says.
	env := units["romana-agent"].get("EnvironmentFile")
	envPath := filepath.Join(root, strings.TrimPrefix(env, "-"))
	must(t, os.WriteFile(envPath, []byte("ROMANA_JOIN_TOKEN="+token+"\n"), 0o600))
	agentConf := rewriteConfig(t, root, "etc/romana/romana-agent.yaml", map[string]any{"server": "https://127.0.0.1:9600", "host": "h1"})
	a := startUnit(t, root, host.Namespace.Path, units["romana-agent"], agentConf, readEnvFile(t, envPath))
	const netAdmin, netRaw, sysAdmin = 1 << 12, 1 << 13, 1 << 21
	if got := a.caps(t); got.bnd != netAdmin|netRaw|sysAdmin || got.eff != netAdmin|netRaw|sysAdmin {
		t.Errorf("romana-agent capabilities: bounding %#x effective %#x, want %#x (CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN for setns into containers)", got.bnd, got.eff, netAdmin|netRaw|sysAdmin)
	}
	expect.Eventually(t, "the agent joined and programmed its namespace", 30*time.Second, func() error {
		if a.exited() {
			t.Fatalf("romana-agent exited:\n%s", a.log())
		}
		for f, mode := range map[string]os.FileMode{"var/lib/romana/agent/host.conf": 0o600, "etc/romana/cni.conf": 0o600,
			"run/romana-agent/cni.sock": 0o600 | os.ModeSocket, "run/romana-agent": 0o700 | os.ModeDir} {
			st, err := os.Stat(filepath.Join(root, f))
			if err != nil {
				return err
			}
			if st.Mode() != mode {
				return fmt.Errorf("/%s: mode %v, want %v", f, st.Mode(), mode)
			}
		}
		if out, err := host.Exec(ctx, "nft", "list", "table", "inet", "romana"); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		if out, err := host.Exec(ctx, "ip", "-o", "addr", "show", "dev", "romana-gw"); err != nil || !strings.Contains(out, "169.254.1.1/32") {
			return fmt.Errorf("romana-gw: %v: %s", err, out)
		}
		return nil
	})
	// romanad judges the installed agent converged (issue 16: the .deb
	// installs, starts, and romana status shows the host converged).
	expect.Eventually(t, "romana status shows h1 converged", 60*time.Second, func() error {
		out, err := cli(root, host.Namespace.Path, "--config", admin, "status")
		if err != nil || !regexp.MustCompile(`(?m)^h1\s+converged\s`).MatchString(out) {
			return fmt.Errorf("romana status: %v\n%s", err, out)
		}
		return nil
	})
	// The installed plugin through the installed agent, which has only the
	// unit's capabilities: ADD wires a container namespace, DEL undoes it.
	romana("tenant", "add", "default")
	romana("segment", "add", "default", "default")
	ctr, err := lab.AddNamespace(ctx, "c1")
	must(t, err)
	cniConf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"romana","type":"romana-cni","agentSocket":%q,"tenant":"default"}`,
		filepath.Join(root, "run/romana-agent/cni.sock"))
	cniRun := func(command string) string {
		t.Helper()
		c := exec.Command("nsenter", "--net="+host.Namespace.Path, "--", filepath.Join(root, "opt/cni/bin/romana-cni"))
		c.Env = []string{"CNI_COMMAND=" + command, "CNI_CONTAINERID=deb1", "CNI_NETNS=" + ctr.Path, "CNI_IFNAME=eth0", "CNI_PATH=" + filepath.Join(root, "opt/cni/bin")}
		c.Stdin = strings.NewReader(cniConf)
		out, err := c.Output()
		if err != nil {
			t.Fatalf("romana-cni %s: %v\n%s\nromana-agent:\n%s", command, err, out, a.log())
		}
		return string(out)
	}
	res := cniRun("ADD")
	if addr, err := ctr.Exec(ctx, "ip", "-4", "-o", "addr", "show", "dev", "eth0"); err != nil || !strings.Contains(addr, "/32") {
		t.Errorf("container after ADD (%s): %v\n%s", res, err, addr)
	}
	cniRun("DEL")
	if out, err := ctr.Exec(ctx, "ip", "link", "show", "dev", "eth0"); err == nil {
		t.Errorf("eth0 left in the container after DEL:\n%s", out)
	}

	out = romana("status")
	t.Logf("romana status:\n%s", out)
	out = romana("host", "list")
	t.Logf("romana host list:\n%s", out)
	a.stop(t)
	d.stop(t)
}

// unit is a unit file's text and its [Service] settings.
type unit struct {
	text    string
	service map[string][]string
}

func readUnit(t *testing.T, path string) unit {
	t.Helper()
	b, err := os.ReadFile(path)
	must(t, err)
	u := unit{text: string(b), service: map[string][]string{}}
	section := ""
	for _, line := range strings.Split(u.text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if line[0] == '[' {
			section = line
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok && section == "[Service]" {
			u.service[k] = append(u.service[k], v)
		}
	}
	return u
}

func (u unit) get(key string) string {
	if v := u.service[key]; len(v) > 0 {
		return v[len(v)-1]
	}
	return ""
}

// rewriteConfig loads an installed example config, moves every absolute
// path in it into root, applies set, and writes it back.
func rewriteConfig(t *testing.T, root, rel string, set map[string]any) string {
	t.Helper()
	p := filepath.Join(root, rel)
	b, err := os.ReadFile(p)
	must(t, err)
	m := map[string]any{}
	must(t, yaml.Unmarshal(b, &m))
	for k, v := range m {
		if s, ok := v.(string); ok && strings.HasPrefix(s, "/") {
			m[k] = filepath.Join(root, s)
		}
	}
	for k, v := range set {
		m[k] = v
	}
	out, err := yaml.Marshal(m)
	must(t, err)
	must(t, os.WriteFile(p, out, 0o644))
	return p
}

func readEnvFile(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	must(t, err)
	defer f.Close()
	var env []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" && l[0] != '#' && strings.Contains(l, "=") {
			env = append(env, l)
		}
	}
	return env
}

// daemon is a process started from a unit's ExecStart.
type daemon struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
}

// startUnit runs u's ExecStart with its paths moved into root, inside the
// network namespace nsPath, as systemd would with the unit's
// CapabilityBoundingSet, NoNewPrivileges, UMask and State/Runtime/
// ConfigurationDirectory (created under root). The --config-file argument
// names config (already in root).
func startUnit(t *testing.T, root, nsPath string, u unit, config string, env []string) *daemon {
	t.Helper()
	argv := strings.Fields(u.get("ExecStart"))
	if len(argv) == 0 {
		t.Fatal("unit without ExecStart")
	}
	for i, a := range argv {
		if strings.HasPrefix(a, "/") {
			argv[i] = filepath.Join(root, a)
		}
	}
	if i := slices.Index(argv, "--config-file"); i < 0 || i+1 >= len(argv) || argv[i+1] != config {
		t.Fatalf("ExecStart %q does not pass --config-file %s", u.get("ExecStart"), config)
	}
	name := filepath.Base(argv[0])
	if !knowsConfigFile(t, argv[0]) {
		t.Fatalf("%s does not accept --config-file (its unit passes it)", name)
	}
	for _, key := range []string{"StateDirectory", "RuntimeDirectory", "ConfigurationDirectory"} {
		base := map[string]string{"StateDirectory": "var/lib", "RuntimeDirectory": "run", "ConfigurationDirectory": "etc"}[key]
		mode, err := strconv.ParseUint(u.get(key+"Mode"), 8, 32)
		if err != nil {
			mode = 0o755
		}
		for _, d := range strings.Fields(u.get(key)) {
			p := filepath.Join(root, base, d)
			must(t, os.MkdirAll(p, os.FileMode(mode)))
			must(t, os.Chmod(p, os.FileMode(mode)))
		}
	}
	bounding := "-all"
	for _, c := range strings.Fields(u.get("CapabilityBoundingSet")) {
		bounding += ",+" + strings.ToLower(strings.TrimPrefix(c, "CAP_"))
	}
	wrap := []string{"nsenter", "--net=" + nsPath, "--", "setpriv", "--bounding-set=" + bounding, "--inh-caps=-all", "--ambient-caps=-all"}
	if u.get("NoNewPrivileges") == "yes" {
		wrap = append(wrap, "--no-new-privs")
	}
	umask := u.get("UMask")
	if umask == "" {
		umask = "0022"
	}
	wrap = append(wrap, "--", "sh", "-c", `umask "$0" && exec "$@"`, umask)
	cmd := exec.Command(wrap[0], append(wrap[1:], argv...)...)
	cmd.Env = append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}, env...)
	logPath := filepath.Join(t.TempDir(), name+".log")
	lf, err := os.Create(logPath)
	must(t, err)
	cmd.Stdout, cmd.Stderr = lf, lf
	must(t, cmd.Start())
	lf.Close()
	d := &daemon{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() { d.err = cmd.Wait(); close(d.done) }()
	t.Cleanup(func() { d.stop(t) })
	t.Logf("started %s (pid %d): %s", name, cmd.Process.Pid, strings.Join(argv, " "))
	return d
}

func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

func (d *daemon) log() string {
	b, _ := os.ReadFile(d.logPath)
	return string(b)
}

// stop sends SIGTERM to the daemon's own PID and waits for it to exit.
func (d *daemon) stop(t *testing.T) {
	if d.exited() {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		if d.err != nil {
			t.Errorf("%s exited after SIGTERM: %v\n%s", d.name, d.err, d.log())
		}
	case <-time.After(30 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
		t.Errorf("%s ignored SIGTERM for 30s\n%s", d.name, d.log())
	}
}

type caps struct{ bnd, eff uint64 }

// caps reads the daemon's capability sets once it runs the unit's binary
// (after nsenter, setpriv and sh have exec'd into it: same PID).
func (d *daemon) caps(t *testing.T) caps {
	t.Helper()
	var c caps
	expect.Eventually(t, d.name+" running", 10*time.Second, func() error {
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", d.cmd.Process.Pid))
		if err != nil || filepath.Base(exe) != d.name {
			if d.exited() {
				t.Fatalf("%s exited:\n%s", d.name, d.log())
			}
			return fmt.Errorf("pid %d runs %q", d.cmd.Process.Pid, exe)
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
		if err != nil {
			return err
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "CapBnd:\t"); ok {
				c.bnd, _ = strconv.ParseUint(v, 16, 64)
			}
			if v, ok := strings.CutPrefix(l, "CapEff:\t"); ok {
				c.eff, _ = strconv.ParseUint(v, 16, 64)
			}
		}
		return nil
	})
	return c
}

// knowsConfigFile tells whether the binary's help lists --config-file.
func knowsConfigFile(t *testing.T, bin string) bool {
	out, _ := exec.Command(bin, "--help").CombinedOutput()
	return strings.Contains(string(out), "config-file")
}

// cli runs the installed romana CLI inside the namespace.
func cli(root, nsPath string, args ...string) (string, error) {
	cmd := exec.Command("nsenter", append([]string{"--net=" + nsPath, "--", filepath.Join(root, "usr/bin/romana")}, args...)...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + root}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
