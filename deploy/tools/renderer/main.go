// Command renderer renders Helm charts like `helm template NAME CHART --namespace NS --values -`,
// for many requests in one process: one JSON request per line on stdin, one JSON answer per line
// on stdout, in order.
//
//	request:  {"id": "7", "chart": "/abs/chart/dir", "release": "orders", "namespace": "tenant-acme",
//	           "values": "<the values as JSON or YAML text>"}
//	answer:   {"id": "7", "manifest": "<what helm template prints on stdout>"}
//	          {"id": "7", "error": "<what helm template prints on stderr>"}
//	request:  {"id": "0", "op": "version"}
//	answer:   {"id": "0", "version": "v3.22.0", "kubeVersion": "v1.34.0"}
//
// Every step is Helm's own code, in the order of Helm's `template` and `install` commands
// (cmd/helm/template.go, cmd/helm/install.go): values parsed by sigs.k8s.io/yaml like
// `--values`, the chart loaded by pkg/chart/loader, then action.Install in client-only dry-run
// mode, which validates the values against values.schema.json and renders with pkg/engine. The
// output is assembled as `helm template` prints it, byte for byte. A loaded chart is kept until a
// file of its folder changes (size or modification time).
//
// Built with the same -ldflags as deploy/scripts/ensure-helm.sh builds helm (Helm's version and
// the Kubernetes version of .Capabilities), so templates see the same capabilities.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/pkg/errors"
	"sigs.k8s.io/yaml"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
)

type request struct {
	ID        string `json:"id"`
	Op        string `json:"op,omitempty"`
	Chart     string `json:"chart"`
	Release   string `json:"release"`
	Namespace string `json:"namespace"`
	Values    string `json:"values"`
}

type answer struct {
	ID          string `json:"id"`
	Manifest    string `json:"manifest,omitempty"`
	Error       string `json:"error,omitempty"`
	Version     string `json:"version,omitempty"`
	KubeVersion string `json:"kubeVersion,omitempty"`
}

type loaded struct {
	fingerprint string
	chart       *chart.Chart
}

var charts = map[string]loaded{}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "version" {
		fmt.Println(helmVersion())
		return
	}
	in := bufio.NewReaderSize(os.Stdin, 1<<20)
	out := bufio.NewWriterSize(os.Stdout, 1<<20)
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	for {
		line, err := in.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			if encErr := enc.Encode(handle(line)); encErr != nil {
				fmt.Fprintf(os.Stderr, "renderer: cannot write an answer: %v\n", encErr)
				os.Exit(1)
			}
			if flushErr := out.Flush(); flushErr != nil {
				os.Exit(1) // the reader went away
			}
		}
		if err == io.EOF {
			return
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "renderer: cannot read a request: %v\n", err)
			os.Exit(1)
		}
	}
}

func handle(line []byte) answer {
	var req request
	if err := json.Unmarshal(line, &req); err != nil {
		return answer{Error: fmt.Sprintf("renderer: the request is not JSON: %v", err)}
	}
	if req.Op == "version" {
		return answer{ID: req.ID, Version: helmVersion(), KubeVersion: chartutil.DefaultCapabilities.KubeVersion.Version}
	}
	manifest, err := template(req)
	if err != nil {
		return answer{ID: req.ID, Error: "Error: " + err.Error()}
	}
	return answer{ID: req.ID, Manifest: manifest}
}

// template is `helm template <release> <chart> --namespace <namespace> --values -` with the
// values of the request on stdin: what it prints on stdout, or the error it prints on stderr.
func template(req request) (string, error) {
	client := action.NewInstall(&action.Configuration{Log: func(string, ...interface{}) {}})
	client.DryRunOption = "true"
	client.DryRun = true
	client.ReleaseName = "release-name"
	client.Replace = true // skip the name check
	client.ClientOnly = true
	client.APIVersions = chartutil.VersionSet(nil)
	client.IncludeCRDs = false

	// runInstall
	name, chartPath, err := client.NameAndChart([]string{req.Release, req.Chart})
	if err != nil {
		return "", err
	}
	client.ReleaseName = name
	vals, err := mergeValues(req.Values)
	if err != nil {
		return "", err
	}
	chartRequested, err := load(chartPath)
	if err != nil {
		return "", err
	}
	switch chartRequested.Metadata.Type {
	case "", "application":
	default:
		return "", errors.Errorf("%s charts are not installable", chartRequested.Metadata.Type)
	}
	if req := chartRequested.Metadata.Dependencies; req != nil {
		if err := action.CheckDependencies(chartRequested, req); err != nil {
			return "", errors.Wrap(err, "An error occurred while checking for chart dependencies. You may need to run `helm dependency build` to fetch missing dependencies")
		}
	}
	client.Namespace = req.Namespace
	rel, err := client.Run(chartRequested, vals)

	// the template command
	if err != nil {
		if rel != nil {
			return "", fmt.Errorf("%w\n\nUse --debug flag to render out invalid YAML", err)
		}
		return "", err
	}
	var manifests bytes.Buffer
	fmt.Fprintln(&manifests, strings.TrimSpace(rel.Manifest))
	for _, m := range rel.Hooks {
		fmt.Fprintf(&manifests, "---\n# Source: %s\n%s\n", m.Path, m.Manifest)
	}
	return manifests.String(), nil
}

// mergeValues is values.Options.MergeValues with one `--values -` file.
func mergeValues(text string) (map[string]interface{}, error) {
	currentMap := map[string]interface{}{}
	if err := yaml.Unmarshal([]byte(text), &currentMap); err != nil {
		return nil, errors.Wrapf(err, "failed to parse %s", "-")
	}
	return mergeMaps(map[string]interface{}{}, currentMap), nil
}

func mergeMaps(a, b map[string]interface{}) map[string]interface{} {
	out := make(map[string]interface{}, len(a))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if v, ok := v.(map[string]interface{}); ok {
			if bv, ok := out[k]; ok {
				if bv, ok := bv.(map[string]interface{}); ok {
					out[k] = mergeMaps(bv, v)
					continue
				}
			}
		}
		out[k] = v
	}
	return out
}

// load is loader.Load, kept while no file of the chart's folder changed. A chart with
// dependencies is loaded afresh every time: rendering may change which of them are enabled.
func load(path string) (*chart.Chart, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	fingerprint := stamp(abs)
	if c, ok := charts[abs]; ok && fingerprint != "" && c.fingerprint == fingerprint {
		return c.chart, nil
	}
	ch, err := loader.Load(path)
	if err != nil {
		return nil, err
	}
	if len(ch.Metadata.Dependencies) == 0 && len(ch.Dependencies()) == 0 && fingerprint != "" {
		charts[abs] = loaded{fingerprint, ch}
	} else {
		delete(charts, abs)
	}
	return ch, nil
}

// stamp names every file under dir with its size and modification time ("" if dir is no folder).
func stamp(dir string) string {
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s\x00%d\x00%d\x00%o\n", p, info.Size(), info.ModTime().UnixNano(), info.Mode())
		return nil
	})
	if err != nil {
		return ""
	}
	return b.String()
}

// helmVersion is Helm's own version, as `helm version --template '{{.Version}}'` prints it.
func helmVersion() string {
	return chartutil.DefaultCapabilities.HelmVersion.Version
}
