// Package deploy holds Romana's Kubernetes manifests (kubernetes/*.yaml,
// embedded) and says what Romana's container images are made of: the
// names the manifests use, the binaries and host files in each image, and
// the rendering of the manifests with the tag the images were built with.
// Command romana-images (in this directory) writes the images.
package deploy

import (
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/romana/romana/cni/install"
	"github.com/romana/romana/image"
)

// Files are the manifests, applied in name order.
//
//go:embed kubernetes/*.yaml
var Files embed.FS

// Registry is where the manifests expect Romana's images; ManifestTag is
// the tag they name. `make images` renders them with its own tag (Render).
const (
	Registry    = "localhost/romana"
	ManifestTag = "dev"
)

// HostFile is a file of the build machine copied into an image with the
// shared libraries it loads (ldd), each at the path the loader looks for
// it: the agent's nft.
type HostFile struct {
	Path string // absolute, on the build machine and in the image
}

// Component is one of Romana's images.
type Component struct {
	Name string // image repository's last element and the main binary
	// Binaries maps a path in the image to a binary of the build's bin
	// directory.
	Binaries map[string]string
	Host     []HostFile
	Dirs     []string // empty directories to create (mode 0755)
}

// Components are Romana's images, by name.
var Components = []Component{
	{Name: "romanad", Binaries: map[string]string{"/usr/bin/romanad": "romanad", "/usr/bin/romana": "romana"},
		Dirs: []string{"/etc/romana", "/var/lib/romana", "/run/romana"}},
	{Name: "romana-agent", Binaries: map[string]string{"/usr/bin/romana-agent": "romana-agent", install.DefaultPluginSource: "romana-cni"},
		Host: []HostFile{{Path: "/usr/sbin/nft"}},
		Dirs: []string{"/etc/romana", "/var/lib/romana/agent", "/run/romana-agent", "/run/netns"}},
	{Name: "romana-kube", Binaries: map[string]string{"/usr/bin/romana-kube": "romana-kube"},
		Dirs: []string{"/etc/romana"}},
}

// ImageName returns the full reference of a component's image.
func ImageName(registry, component, tag string) string {
	return registry + "/" + component + ":" + tag
}

// Manifests returns every manifest file, in name order, as one YAML
// stream.
func Manifests() ([]byte, error) {
	names, err := fs.Glob(Files, "kubernetes/*.yaml")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	var b bytes.Buffer
	for _, n := range names {
		data, err := fs.ReadFile(Files, n)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "---\n# Source: deploy/%s\n", n)
		b.Write(data)
		if len(data) > 0 && data[len(data)-1] != '\n' {
			b.WriteByte('\n')
		}
	}
	return b.Bytes(), nil
}

// imageRE finds the manifests' image references.
var imageRE = regexp.MustCompile(`(?m)^(\s*image:\s*)` + regexp.QuoteMeta(Registry) + `/([a-z0-9-]+):` + regexp.QuoteMeta(ManifestTag) + `\s*$`)

// Render returns the manifests with their images at registry and tag.
func Render(manifests []byte, registry, tag string) []byte {
	return imageRE.ReplaceAllFunc(manifests, func(m []byte) []byte {
		s := imageRE.FindSubmatch(m)
		return []byte(string(s[1]) + ImageName(registry, string(s[2]), tag))
	})
}

// Build says how to make the images.
type Build struct {
	BinDir   string    // the built binaries (static, linux)
	Registry string    // default Registry
	Tag      string    // the images' tag
	Arch     string    // GOARCH of the binaries
	Created  time.Time // every time stamp (SOURCE_DATE_EPOCH)
	// ReadFile reads a file of the build machine (os.ReadFile).
	ReadFile func(string) ([]byte, error)
	// Libraries lists the shared libraries a host binary loads, the
	// dynamic loader included (Ldd).
	Libraries func(string) ([]string, error)
}

// Images returns the images of every component.
func (b Build) Images() ([]image.Image, error) {
	var out []image.Image
	for _, c := range Components {
		img, err := b.image(c)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", c.Name, err)
		}
		out = append(out, img)
	}
	return out, nil
}

func (b Build) image(c Component) (image.Image, error) {
	reg := b.Registry
	if reg == "" {
		reg = Registry
	}
	img := image.Image{
		Name: ImageName(reg, c.Name, b.Tag), OS: "linux", Arch: b.Arch, Created: b.Created,
		Entrypoint: []string{"/usr/bin/" + c.Name},
		Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Labels: map[string]string{
			"org.opencontainers.image.title":   c.Name,
			"org.opencontainers.image.version": b.Tag,
			"org.opencontainers.image.source":  "https://github.com/romana/romana",
		},
		Files: []image.File{
			{Path: "/tmp", Dir: true, Mode: 0o777 | fs.ModeSticky},
			{Path: "/run", Dir: true, Mode: 0o755},
			{Path: "/var/run", Link: "/run"},
			{Path: "/etc/passwd", Mode: 0o644, Data: []byte("root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")},
			{Path: "/etc/group", Mode: 0o644, Data: []byte("root:x:0:\nnogroup:x:65534:\n")},
		},
	}
	have := map[string]bool{}
	for _, f := range img.Files {
		have[f.Path] = true
	}
	add := func(f image.File) {
		if !have[f.Path] {
			have[f.Path] = true
			img.Files = append(img.Files, f)
		}
	}
	for _, d := range c.Dirs {
		add(image.File{Path: d, Dir: true, Mode: 0o755})
	}
	dsts := make([]string, 0, len(c.Binaries))
	for dst := range c.Binaries {
		dsts = append(dsts, dst)
	}
	sort.Strings(dsts)
	for _, dst := range dsts {
		data, err := b.ReadFile(filepath.Join(b.BinDir, c.Binaries[dst]))
		if err != nil {
			return image.Image{}, err
		}
		add(image.File{Path: dst, Mode: 0o755, Data: data})
	}
	for _, h := range c.Host {
		libs, err := b.Libraries(h.Path)
		if err != nil {
			return image.Image{}, err
		}
		for _, p := range append([]string{h.Path}, libs...) {
			data, err := b.ReadFile(p) // a link's target's contents, at the link's path
			if err != nil {
				return image.Image{}, err
			}
			add(image.File{Path: path.Clean(p), Mode: 0o755, Data: data})
		}
	}
	return img, nil
}

// Ldd returns the shared libraries bin loads, as ldd prints them (the
// paths the loader resolves, the loader itself included), sorted.
func Ldd(bin string) ([]string, error) {
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", bin, err)
	}
	return parseLdd(string(out))
}

func parseLdd(out string) ([]string, error) {
	var libs []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			libs = append(libs, f[2])
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			libs = append(libs, f[0]) // the loader: /lib64/ld-linux-x86-64.so.2 (0x...)
		case len(f) >= 3 && f[1] == "=>" && f[2] == "not":
			return nil, fmt.Errorf("ldd: %s not found", f[0])
		}
	}
	sort.Strings(libs)
	return libs, nil
}

// Environ is the build machine for Build: os.ReadFile and Ldd.
func Environ(b Build) Build {
	b.ReadFile, b.Libraries = os.ReadFile, Ldd
	return b
}
