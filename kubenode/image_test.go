package kubenode

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"strings"
	"testing"
)

// readLayout reads an OCI layout tar back: its files by name.
func readLayout(t *testing.T, b []byte) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := files[h.Name]; dup {
			t.Errorf("%s twice in the layout", h.Name)
		}
		files[h.Name] = data
	}
}

// TestWriteLayout: two images sharing a layer make one layout whose index
// names both (as containerd's import reads them), every blob is stored once
// under its own digest, each config runs its entrypoint on its layer, and
// writing twice gives the same bytes.
func TestWriteLayout(t *testing.T) {
	files := []File{{Path: "agnhost", Mode: 0o755, Data: []byte("#!/bin/true\n")}, {Path: "tmp/.keep", Mode: 0o644}}
	imgs := []Image{
		{Name: AgnhostImage, Entrypoint: []string{"/agnhost"}, Files: files},
		{Name: PauseImage, Entrypoint: []string{"/agnhost", "pause"}, Files: files},
	}
	var a, b bytes.Buffer
	if err := WriteLayout(&a, imgs...); err != nil {
		t.Fatal(err)
	}
	if err := WriteLayout(&b, imgs...); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("two writes of the same images differ")
	}
	got := readLayout(t, a.Bytes())
	if string(got["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout %q", got["oci-layout"])
	}
	blob := func(d string) []byte {
		t.Helper()
		data, ok := got["blobs/sha256/"+strings.TrimPrefix(d, "sha256:")]
		if !ok {
			t.Fatalf("no blob %s", d)
		}
		sum := sha256.Sum256(data)
		if "sha256:"+hex.EncodeToString(sum[:]) != d {
			t.Fatalf("blob %s has another digest", d)
		}
		return data
	}
	var index struct {
		Manifests []descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(got["index.json"], &index); err != nil {
		t.Fatal(err)
	}
	if len(index.Manifests) != 2 {
		t.Fatalf("index has %d manifests", len(index.Manifests))
	}
	layers := map[string]bool{}
	for i, m := range index.Manifests {
		if m.Annotations[annName] != imgs[i].Name {
			t.Errorf("manifest %d named %q, want %q", i, m.Annotations[annName], imgs[i].Name)
		}
		var man struct {
			Config descriptor   `json:"config"`
			Layers []descriptor `json:"layers"`
		}
		if err := json.Unmarshal(blob(m.Digest), &man); err != nil {
			t.Fatal(err)
		}
		var cfg struct {
			Config struct{ Entrypoint []string } `json:"config"`
			RootFS struct {
				DiffIDs []string `json:"diff_ids"`
			} `json:"rootfs"`
		}
		if err := json.Unmarshal(blob(man.Config.Digest), &cfg); err != nil {
			t.Fatal(err)
		}
		if strings.Join(cfg.Config.Entrypoint, " ") != strings.Join(imgs[i].Entrypoint, " ") {
			t.Errorf("%s entrypoint %v", imgs[i].Name, cfg.Config.Entrypoint)
		}
		if len(man.Layers) != 1 || len(cfg.RootFS.DiffIDs) != 1 || cfg.RootFS.DiffIDs[0] != man.Layers[0].Digest {
			t.Fatalf("%s layers %v diff IDs %v", imgs[i].Name, man.Layers, cfg.RootFS.DiffIDs)
		}
		layers[man.Layers[0].Digest] = true
		var names []string
		tr := tar.NewReader(bytes.NewReader(blob(man.Layers[0].Digest)))
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			names = append(names, h.Name)
		}
		if strings.Join(names, " ") != "agnhost tmp/ tmp/.keep" {
			t.Errorf("%s layer holds %v", imgs[i].Name, names)
		}
	}
	if len(layers) != 1 {
		t.Errorf("the shared layer is %d blobs", len(layers))
	}
	if err := WriteLayout(io.Discard, Image{Name: "x:1"}); err == nil {
		t.Error("an image without an entrypoint was written")
	}
}
