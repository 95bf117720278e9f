// Command romana-images writes Romana's container images as OCI layout
// archives (package image) from built binaries, and the Kubernetes
// manifests rendered with their tag: `make images` runs it.
//
//	romana-images -bin DIR -out DIR -tag TAG [-registry R] [-epoch S] [-arch A]
//
// In -out: romanad.tar, romana-agent.tar, romana-kube.tar (import with
// `ctr -n k8s.io images import FILE`), romana.yaml (deploy/kubernetes/*.yaml
// with the images at -registry and -tag: `kubectl apply -f romana.yaml`) and
// images.txt (name, manifest digest, file per line). The same inputs give
// the same bytes.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/romana/romana/deploy"
	"github.com/romana/romana/image"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "romana-images:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("romana-images", flag.ContinueOnError)
	bin := fs.String("bin", "", "directory of the static linux binaries romanad, romana, romana-agent, romana-cni, romana-kube")
	out := fs.String("out", "", "directory to write the images and romana.yaml to (created)")
	tag := fs.String("tag", "", "the images' tag (the version)")
	registry := fs.String("registry", deploy.Registry, "registry and path of the images")
	epoch := fs.String("epoch", os.Getenv("SOURCE_DATE_EPOCH"), "time stamp of every file, seconds since 1970 (default $SOURCE_DATE_EPOCH, else 0)")
	arch := fs.String("arch", runtime.GOARCH, "architecture of the binaries")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *bin == "" || *out == "" || *tag == "" || fs.NArg() > 0 {
		return fmt.Errorf("need -bin, -out and -tag, and no arguments")
	}
	var secs int64
	if *epoch != "" {
		var err error
		if secs, err = strconv.ParseInt(*epoch, 10, 64); err != nil {
			return fmt.Errorf("-epoch %q: %w", *epoch, err)
		}
	}
	b := deploy.Environ(deploy.Build{BinDir: *bin, Registry: *registry, Tag: *tag, Arch: *arch, Created: time.Unix(secs, 0).UTC()})
	imgs, err := b.Images()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	var list bytes.Buffer
	for i, img := range imgs {
		file := filepath.Join(*out, deploy.Components[i].Name+".tar")
		var buf bytes.Buffer
		d, err := image.Write(&buf, img)
		if err != nil {
			return err
		}
		if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(&list, "%s %s %s\n", img.Name, d, file)
		fmt.Printf("%s %s %s (%d MB)\n", img.Name, d, file, buf.Len()>>20)
	}
	m, err := deploy.Manifests()
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*out, "romana.yaml"), deploy.Render(m, *registry, *tag), 0o644); err != nil {
		return err
	}
	fmt.Printf("%s\n", filepath.Join(*out, "romana.yaml"))
	return os.WriteFile(filepath.Join(*out, "images.txt"), list.Bytes(), 0o644)
}
