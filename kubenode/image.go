package kubenode

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Image is one container image of an OCI layout: a single layer holding
// Files, run as Entrypoint.
type Image struct {
	// Name is the reference containerd files it under
	// (annotation io.containerd.image.name), e.g.
	// "registry.k8s.io/pause:3.10.2".
	Name       string
	Entrypoint []string
	Files      []File
}

// File is a regular file of an image's layer; its directories are added.
type File struct {
	Path string // relative to /, e.g. "agnhost"
	Mode int64  // e.g. 0o755
	Data []byte
}

// OCI media types and the annotation containerd's import names images by.
const (
	mediaIndex    = "application/vnd.oci.image.index.v1+json"
	mediaManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaConfig   = "application/vnd.oci.image.config.v1+json"
	mediaLayer    = "application/vnd.oci.image.layer.v1.tar"
	annName       = "io.containerd.image.name"
	annRef        = "org.opencontainers.image.ref.name"
)

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *platform         `json:"platform,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

// WriteLayout writes images as one OCI image layout in a tar stream (the
// form `ctr images import` reads): oci-layout, index.json naming each image,
// and blobs/sha256/ with each distinct layer, config and manifest once. The
// output is a function of the images alone (no clock, fixed owners and
// times, sorted entries), so two builds give the same bytes and digests.
func WriteLayout(w io.Writer, images ...Image) error {
	blobs := map[string][]byte{}
	add := func(b []byte) string {
		sum := sha256.Sum256(b)
		d := "sha256:" + hex.EncodeToString(sum[:])
		blobs[d] = b
		return d
	}
	var index []descriptor
	for _, img := range images {
		if img.Name == "" || len(img.Entrypoint) == 0 {
			return fmt.Errorf("image %q: a name and an entrypoint are required", img.Name)
		}
		layer, err := layerTar(img.Files)
		if err != nil {
			return fmt.Errorf("image %s: layer: %w", img.Name, err)
		}
		layerDigest := add(layer)
		config, err := json.Marshal(map[string]any{
			"architecture": "amd64",
			"os":           "linux",
			"config": map[string]any{
				"Entrypoint": img.Entrypoint,
				"Env":        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			},
			// Uncompressed layer: its diff ID is its digest.
			"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
		})
		if err != nil {
			return err
		}
		configDigest := add(config)
		manifest, err := json.Marshal(map[string]any{
			"schemaVersion": 2,
			"mediaType":     mediaManifest,
			"config":        descriptor{MediaType: mediaConfig, Digest: configDigest, Size: int64(len(config))},
			"layers":        []descriptor{{MediaType: mediaLayer, Digest: layerDigest, Size: int64(len(layer))}},
		})
		if err != nil {
			return err
		}
		tag := img.Name[strings.LastIndex(img.Name, ":")+1:]
		index = append(index, descriptor{MediaType: mediaManifest, Digest: add(manifest), Size: int64(len(manifest)),
			Annotations: map[string]string{annName: img.Name, annRef: tag},
			Platform:    &platform{Architecture: "amd64", OS: "linux"}})
	}
	indexJSON, err := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": mediaIndex, "manifests": index})
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	put := func(name string, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: time.Unix(0, 0), Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	if err := put("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if err := put("index.json", indexJSON); err != nil {
		return err
	}
	digests := make([]string, 0, len(blobs))
	for d := range blobs {
		digests = append(digests, d)
	}
	slices.Sort(digests)
	for _, d := range digests {
		if err := put("blobs/sha256/"+strings.TrimPrefix(d, "sha256:"), blobs[d]); err != nil {
			return err
		}
	}
	return tw.Close()
}

// layerTar is the layer of files: their parent directories (0755), then
// the files, sorted by path, owned by root, dated the epoch.
func layerTar(files []File) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	var names []string
	byPath := map[string]File{}
	for _, f := range files {
		p := strings.Trim(f.Path, "/")
		if p == "" || byPath[p].Path != "" {
			return nil, fmt.Errorf("file path %q empty or repeated", f.Path)
		}
		f.Path = p
		byPath[p] = f
		names = append(names, p)
		for d := p; strings.Contains(d, "/"); {
			d = d[:strings.LastIndex(d, "/")]
			dirs[d+"/"] = true
		}
	}
	for d := range dirs {
		names = append(names, d)
	}
	slices.Sort(names)
	epoch := time.Unix(0, 0)
	for _, n := range names {
		if strings.HasSuffix(n, "/") {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: n, Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
				return nil, err
			}
			continue
		}
		f := byPath[n]
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: f.Mode, Size: int64(len(f.Data)), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.Data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
