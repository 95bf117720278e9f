package kubenode

import (
	"fmt"
	"io"
	"io/fs"
	"runtime"
	"strings"
	"time"

	"github.com/romana/romana/image"
)

// Image is one container image of an OCI layout: a single layer holding
// Files, run as Entrypoint. It is the test images' short form of
// image.Image, which writes it.
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

// The index annotation containerd's import names images by, and the OCI
// descriptor (for the tests, which read the layout back).
const annName = image.AnnotationContainerdName

type descriptor = image.Descriptor

// WriteLayout writes images as one OCI image layout in a tar stream (the
// form `ctr images import` reads) with package image: oci-layout,
// index.json naming each image, and blobs/sha256/ with each distinct
// layer, config and manifest once. Every image is linux on this machine's
// architecture, with a PATH and no other environment; the output is a
// function of the images alone (time stamps the epoch, owners root, sorted
// entries), so two builds give the same bytes and digests.
func WriteLayout(w io.Writer, images ...Image) error {
	var imgs []image.Image
	for _, img := range images {
		if img.Name == "" || len(img.Entrypoint) == 0 {
			return fmt.Errorf("image %q: a name and an entrypoint are required", img.Name)
		}
		out := image.Image{Name: img.Name, OS: "linux", Arch: runtime.GOARCH, Entrypoint: img.Entrypoint,
			Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, Created: time.Unix(0, 0)}
		for _, f := range img.Files {
			p := strings.Trim(f.Path, "/")
			if p == "" {
				return fmt.Errorf("image %s: empty file path", img.Name)
			}
			out.Files = append(out.Files, image.File{Path: "/" + p, Mode: fs.FileMode(f.Mode).Perm(), Data: f.Data})
		}
		imgs = append(imgs, out)
	}
	if _, err := image.WriteAll(w, imgs...); err != nil {
		return fmt.Errorf("write images: %w", err)
	}
	return nil
}
