// Package image writes container images as OCI image layout archives
// (oci-layout, index.json and blobs in one tar), the format
// `ctr images import` and `podman load` read, with the standard library
// only and without Docker or a registry. An image is one layer.
//
// The output is a function of the Image alone: entries are sorted, every
// time stamp is Image.Created, owners are uid and gid 0, and the layer is
// an uncompressed tar, so the same inputs give a byte-identical archive
// (TestReproducible).
package image

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Media types and annotations of the OCI image spec and containerd.
const (
	MediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	MediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	MediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar"
	// AnnotationRefName is the OCI tag of a manifest in index.json.
	AnnotationRefName = "org.opencontainers.image.ref.name"
	// AnnotationContainerdName is the full image name containerd's import
	// gives the image (ctr -n k8s.io images import names it so).
	AnnotationContainerdName = "io.containerd.image.name"
)

// File is one entry of the image's layer. Exactly one of Data (a regular
// file), Link (a symbolic link's target) or Dir is meaningful.
type File struct {
	Path string // absolute, cleaned: /usr/bin/romanad
	Mode fs.FileMode
	Data []byte
	Link string
	Dir  bool
}

// Image is everything an image is made of.
type Image struct {
	// Name is the full reference: REGISTRY/REPOSITORY:TAG, e.g.
	// localhost/romana/romanad:v1.2.3. Kubernetes and containerd find the
	// image by exactly this name.
	Name       string
	OS, Arch   string // linux, amd64
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
	Labels     map[string]string
	// Created is the image's creation time and every entry's mtime
	// (SOURCE_DATE_EPOCH in a reproducible build).
	Created time.Time
	Files   []File
}

// refRE is a deliberately narrow image reference: a registry host, a path,
// and a tag (no digest).
var refRE = regexp.MustCompile(`^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)+:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// Tag returns the tag of a reference REGISTRY/REPO:TAG.
func Tag(name string) string { return name[strings.LastIndex(name, ":")+1:] }

func (img *Image) check() error {
	if !refRE.MatchString(img.Name) {
		return fmt.Errorf("image name %q: want REGISTRY/REPOSITORY:TAG (lowercase repository, a tag)", img.Name)
	}
	if img.OS == "" || img.Arch == "" {
		return fmt.Errorf("image %s: OS and Arch are required", img.Name)
	}
	seen := map[string]bool{}
	for _, f := range img.Files {
		if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path || f.Path == "/" {
			return fmt.Errorf("image %s: file path %q: want an absolute, clean path", img.Name, f.Path)
		}
		if seen[f.Path] {
			return fmt.Errorf("image %s: file %s given twice", img.Name, f.Path)
		}
		seen[f.Path] = true
	}
	return nil
}

// Layer returns the image's layer: a tar of its files and of every parent
// directory not given (mode 0755), sorted by path.
func Layer(img Image) ([]byte, error) {
	if err := img.check(); err != nil {
		return nil, err
	}
	files := map[string]File{}
	for _, f := range img.Files {
		files[f.Path] = f
		for d := path.Dir(f.Path); d != "/"; d = path.Dir(d) {
			if _, ok := files[d]; !ok {
				files[d] = File{Path: d, Dir: true, Mode: 0o755}
			}
		}
	}
	for _, f := range img.Files { // a given directory wins over an implied one
		files[f.Path] = f
	}
	paths := make([]string, 0, len(files))
	for p := range files {
		if parent, ok := files[path.Dir(p)]; ok && !parent.Dir {
			return nil, fmt.Errorf("image %s: %s is under %s, which is not a directory", img.Name, p, path.Dir(p))
		}
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range paths {
		f := files[p]
		h := &tar.Header{Name: strings.TrimPrefix(p, "/"), Mode: int64(f.Mode.Perm()), ModTime: img.Created.UTC().Truncate(time.Second), Format: tar.FormatPAX}
		if f.Mode&fs.ModeSticky != 0 {
			h.Mode |= 0o1000
		}
		switch {
		case f.Dir:
			h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
		case f.Link != "":
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, f.Link, 0o777
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.Data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("image %s: layer entry %s: %w", img.Name, p, err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.Data); err != nil {
				return nil, fmt.Errorf("image %s: layer entry %s: %w", img.Name, p, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Descriptor is an OCI content descriptor.
type Descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *Platform         `json:"platform,omitempty"`
}

// Platform is a descriptor's platform.
type Platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

type manifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Config        Descriptor   `json:"config"`
	Layers        []Descriptor `json:"layers"`
}

type index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []Descriptor `json:"manifests"`
}

type config struct {
	Created      string    `json:"created"`
	Architecture string    `json:"architecture"`
	OS           string    `json:"os"`
	Config       RunConfig `json:"config"`
	RootFS       struct {
		Type    string   `json:"type"`
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
}

// RunConfig is the part of an image config a runtime starts the container with.
type RunConfig struct {
	Entrypoint []string          `json:"Entrypoint,omitempty"`
	Cmd        []string          `json:"Cmd,omitempty"`
	Env        []string          `json:"Env,omitempty"`
	WorkingDir string            `json:"WorkingDir,omitempty"`
	Labels     map[string]string `json:"Labels,omitempty"`
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// Write writes img as an OCI image layout archive to w and returns the
// manifest's digest (what `ctr images ls` shows as the image's digest).
func Write(w io.Writer, img Image) (string, error) {
	ds, err := WriteAll(w, img)
	if err != nil {
		return "", err
	}
	return ds[0], nil
}

// WriteAll writes imgs as one OCI image layout archive to w, index.json
// naming each, every distinct blob once (images with the same files share
// their layer's blob), and returns each image's manifest digest. The
// archive's own entries are dated the latest Created of the images.
// `ctr images import` imports every image of it.
func WriteAll(w io.Writer, imgs ...Image) ([]string, error) {
	if len(imgs) == 0 {
		return nil, fmt.Errorf("write images: none given")
	}
	blobs := map[string][]byte{}
	var manifests []Descriptor
	var digests []string
	var newest time.Time
	for _, img := range imgs {
		layer, err := Layer(img)
		if err != nil {
			return nil, err
		}
		var cfg config
		cfg.Created = img.Created.UTC().Format(time.RFC3339)
		cfg.Architecture, cfg.OS = img.Arch, img.OS
		cfg.Config = RunConfig{Entrypoint: img.Entrypoint, Cmd: img.Cmd, Env: img.Env, WorkingDir: img.WorkingDir, Labels: img.Labels}
		cfg.RootFS.Type = "layers"
		cfg.RootFS.DiffIDs = []string{digest(layer)}
		cfgJSON, err := json.Marshal(cfg)
		if err != nil {
			return nil, err
		}
		man, err := json.Marshal(manifest{SchemaVersion: 2, MediaType: MediaTypeManifest,
			Config: Descriptor{MediaType: MediaTypeConfig, Digest: digest(cfgJSON), Size: int64(len(cfgJSON))},
			Layers: []Descriptor{{MediaType: MediaTypeLayer, Digest: digest(layer), Size: int64(len(layer))}}})
		if err != nil {
			return nil, err
		}
		for _, b := range [][]byte{layer, cfgJSON, man} {
			blobs[digest(b)] = b
		}
		manifests = append(manifests, Descriptor{
			MediaType: MediaTypeManifest, Digest: digest(man), Size: int64(len(man)),
			Platform:    &Platform{Architecture: img.Arch, OS: img.OS},
			Annotations: map[string]string{AnnotationContainerdName: img.Name, AnnotationRefName: Tag(img.Name)},
		})
		digests = append(digests, digest(man))
		if img.Created.After(newest) {
			newest = img.Created
		}
	}
	idx, err := json.Marshal(index{SchemaVersion: 2, MediaType: MediaTypeIndex, Manifests: manifests})
	if err != nil {
		return nil, err
	}
	mtime := newest.UTC().Truncate(time.Second)
	tw := tar.NewWriter(w)
	entries := []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", idx},
	}
	names := make([]string, 0, len(blobs))
	for d := range blobs {
		names = append(names, d)
	}
	sort.Strings(names)
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Name: dir, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
	}
	for _, d := range names {
		entries = append(entries, struct {
			name string
			data []byte
		}{"blobs/sha256/" + strings.TrimPrefix(d, "sha256:"), blobs[d]})
	}
	for _, e := range entries {
		if err := tw.WriteHeader(&tar.Header{Name: e.name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(e.data)), ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return nil, fmt.Errorf("image %s: write %s: %w", imgs[0].Name, e.name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, fmt.Errorf("image %s: write %s: %w", imgs[0].Name, e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("image %s: %w", imgs[0].Name, err)
	}
	return digests, nil
}

// Archive is what Read found in an OCI layout archive.
type Archive struct {
	Name     string // the index's io.containerd.image.name
	Digest   string // the manifest's
	Platform Platform
	Config   RunConfig
	Files    map[string]*tar.Header // the layer's entries by absolute path
	Data     map[string][]byte      // regular files' contents by absolute path
}

// Read parses an archive Write wrote (one manifest, one layer) and checks
// every blob's digest and size against its descriptor.
func Read(r io.Reader) (*Archive, error) {
	tr := tar.NewReader(r)
	files := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read archive: %w", err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, fmt.Errorf("read archive entry %s: %w", h.Name, err)
		}
		files[h.Name] = b
	}
	if string(files["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
		return nil, fmt.Errorf("read archive: no oci-layout 1.0.0")
	}
	blob := func(d Descriptor, into any) ([]byte, error) {
		b, ok := files["blobs/sha256/"+strings.TrimPrefix(d.Digest, "sha256:")]
		if !ok {
			return nil, fmt.Errorf("read archive: blob %s missing", d.Digest)
		}
		if digest(b) != d.Digest || int64(len(b)) != d.Size {
			return nil, fmt.Errorf("read archive: blob %s: digest or size does not match its descriptor", d.Digest)
		}
		if into != nil {
			if err := json.Unmarshal(b, into); err != nil {
				return nil, fmt.Errorf("read archive: blob %s: %w", d.Digest, err)
			}
		}
		return b, nil
	}
	var idx index
	if err := json.Unmarshal(files["index.json"], &idx); err != nil {
		return nil, fmt.Errorf("read archive: index.json: %w", err)
	}
	if len(idx.Manifests) != 1 || idx.Manifests[0].Platform == nil {
		return nil, fmt.Errorf("read archive: index.json: want one manifest with a platform, have %d", len(idx.Manifests))
	}
	md := idx.Manifests[0]
	var man manifest
	if _, err := blob(md, &man); err != nil {
		return nil, err
	}
	var cfg config
	if _, err := blob(man.Config, &cfg); err != nil {
		return nil, err
	}
	if len(man.Layers) != 1 || len(cfg.RootFS.DiffIDs) != 1 || cfg.RootFS.DiffIDs[0] != man.Layers[0].Digest {
		return nil, fmt.Errorf("read archive: want one uncompressed layer whose diff id is its digest")
	}
	layer, err := blob(man.Layers[0], nil)
	if err != nil {
		return nil, err
	}
	a := &Archive{Name: md.Annotations[AnnotationContainerdName], Digest: md.Digest, Platform: *md.Platform, Config: cfg.Config,
		Files: map[string]*tar.Header{}, Data: map[string][]byte{}}
	lr := tar.NewReader(bytes.NewReader(layer))
	for {
		h, err := lr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read layer: %w", err)
		}
		p := "/" + strings.TrimSuffix(h.Name, "/")
		a.Files[p] = h
		if h.Typeflag == tar.TypeReg {
			if a.Data[p], err = io.ReadAll(lr); err != nil {
				return nil, fmt.Errorf("read layer entry %s: %w", p, err)
			}
		}
	}
	return a, nil
}
