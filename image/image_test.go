package image

import (
	"archive/tar"
	"bytes"
	"io/fs"
	"strings"
	"testing"
	"time"
)

func sample(created time.Time) Image {
	return Image{
		Name: "localhost/romana/test:v1.2.3", OS: "linux", Arch: "amd64",
		Entrypoint: []string{"/usr/bin/app"}, Env: []string{"PATH=/usr/bin"},
		Created: created,
		Files: []File{
			{Path: "/usr/bin/app", Mode: 0o755, Data: []byte("#!binary")},
			{Path: "/lib64/ld.so", Link: "/lib/ld.so"},
			{Path: "/lib/ld.so", Mode: 0o644, Data: []byte("ld")},
			{Path: "/tmp", Dir: true, Mode: 0o777 | fs.ModeSticky},
		},
	}
}

func write(t *testing.T, img Image) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	d, err := Write(&buf, img)
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), d
}

// TestReproducible: the same Image gives the same bytes, whatever order
// its files are listed in; another time stamp gives other bytes.
func TestReproducible(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	a, da := write(t, sample(t0))
	rev := sample(t0)
	for i, j := 0, len(rev.Files)-1; i < j; i, j = i+1, j-1 {
		rev.Files[i], rev.Files[j] = rev.Files[j], rev.Files[i]
	}
	b, db := write(t, rev)
	if !bytes.Equal(a, b) || da != db {
		t.Fatalf("same image, different archives (%s, %s)", da, db)
	}
	c, dc := write(t, sample(t0.Add(time.Second)))
	if bytes.Equal(a, c) || da == dc {
		t.Fatal("another creation time gave the same archive")
	}
}

func TestRoundTrip(t *testing.T) {
	t0 := time.Unix(1700000000, 0).UTC()
	raw, d := write(t, sample(t0))
	a, err := Read(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if a.Name != "localhost/romana/test:v1.2.3" || a.Digest != d || a.Platform != (Platform{Architecture: "amd64", OS: "linux"}) {
		t.Fatalf("got name %q digest %s platform %+v", a.Name, a.Digest, a.Platform)
	}
	if strings.Join(a.Config.Entrypoint, " ") != "/usr/bin/app" {
		t.Fatalf("entrypoint %v", a.Config.Entrypoint)
	}
	want := map[string]struct {
		typ  byte
		mode int64
	}{
		"/usr": {tar.TypeDir, 0o755}, "/usr/bin": {tar.TypeDir, 0o755}, "/usr/bin/app": {tar.TypeReg, 0o755},
		"/lib": {tar.TypeDir, 0o755}, "/lib/ld.so": {tar.TypeReg, 0o644}, "/lib64": {tar.TypeDir, 0o755},
		"/lib64/ld.so": {tar.TypeSymlink, 0o777}, "/tmp": {tar.TypeDir, 0o1777},
	}
	if len(a.Files) != len(want) {
		t.Errorf("layer has %d entries, want %d", len(a.Files), len(want))
	}
	for p, w := range want {
		h := a.Files[p]
		if h == nil {
			t.Errorf("%s missing", p)
			continue
		}
		if h.Typeflag != w.typ || h.Mode != w.mode || h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(t0) {
			t.Errorf("%s: type %c mode %o uid %d gid %d mtime %v; want type %c mode %o, root, %v", p, h.Typeflag, h.Mode, h.Uid, h.Gid, h.ModTime, w.typ, w.mode, t0)
		}
	}
	if string(a.Data["/usr/bin/app"]) != "#!binary" || a.Files["/lib64/ld.so"].Linkname != "/lib/ld.so" {
		t.Error("contents or link target changed")
	}
	// A corrupted blob is noticed.
	bad := bytes.Replace(raw, []byte("#!binary"), []byte("#!BINARY"), 1)
	if _, err := Read(bytes.NewReader(bad)); err == nil {
		t.Error("Read accepted an archive whose layer does not match its digest")
	}
}

func TestRefused(t *testing.T) {
	for name, mod := range map[string]func(*Image){
		"no tag":        func(i *Image) { i.Name = "localhost/romana/test" },
		"upper case":    func(i *Image) { i.Name = "localhost/Romana/test:v1" },
		"no registry":   func(i *Image) { i.Name = "test:v1" },
		"relative path": func(i *Image) { i.Files[0].Path = "usr/bin/app" },
		"unclean path":  func(i *Image) { i.Files[0].Path = "/usr//bin/app" },
		"twice":         func(i *Image) { i.Files[1].Path = i.Files[0].Path },
		"under a file":  func(i *Image) { i.Files[1].Path = "/usr/bin/app/x" },
		"under a link":  func(i *Image) { i.Files[3].Path = "/lib64/ld.so/tmp" },
		"no arch":       func(i *Image) { i.Arch = "" },
	} {
		img := sample(time.Unix(0, 0))
		mod(&img)
		if _, err := Write(&bytes.Buffer{}, img); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
