package shim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"google.golang.org/protobuf/types/known/anypb"
)

// Runtime options: the node-wide defaults of every pod's microVM, from
// containerd's configuration. For a runtime other than runc, containerd
// sends a task's runtime options to the shim as runtimeoptions.v1.Options
// in CreateTaskRequest.Options:
//   - CRI, from [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.cvm.options]:
//     ConfigPath = '/etc/cvm/shim.toml' gives that path; any other table
//     (and no ConfigPath) arrives whole, as TOML, in ConfigBody;
//   - ctr run --runtime-config-path FILE gives ConfigPath.
//
// The file (TOML, or JSON when it starts with '{') and the body use the
// keys of ShimConfig; pod annotations (io.cvm.*) override them.

// MaxShimConfig bounds a shim configuration file or body.
const MaxShimConfig = 64 << 10

// ShimConfig is the shim's configuration file. Every key is optional.
type ShimConfig struct {
	Kernel   string `toml:"kernel" json:"kernel"`
	VCPUs    int    `toml:"vcpus" json:"vcpus"`
	Memory   string `toml:"memory" json:"memory"`
	TEE      string `toml:"tee" json:"tee"`
	KBS      string `toml:"kbs" json:"kbs"`
	KBSCA    string `toml:"kbs_ca" json:"kbs_ca"`
	Resource string `toml:"resource" json:"resource"`
	SimDir   string `toml:"sim_dir" json:"sim_dir"`
	Rootfs   string `toml:"rootfs" json:"rootfs"`
	Engine   string `toml:"engine" json:"engine"`
}

// annotations returns c as the io.cvm.* annotations it stands for, so that
// both are checked by ParseVMOptions.
func (c ShimConfig) annotations() map[string]string {
	m := map[string]string{}
	set := func(k, v string) {
		if v != "" {
			m[k] = v
		}
	}
	set(AnnotationKernel, c.Kernel)
	if c.VCPUs != 0 {
		m[AnnotationVCPUs] = strconv.Itoa(c.VCPUs)
	}
	set(AnnotationMemory, c.Memory)
	set(AnnotationTEE, c.TEE)
	set(AnnotationKBS, c.KBS)
	set(AnnotationKBSCA, c.KBSCA)
	set(AnnotationResource, c.Resource)
	set(AnnotationSimDir, c.SimDir)
	set(AnnotationRootfs, c.Rootfs)
	set(AnnotationEngine, c.Engine)
	return m
}

// ParseShimConfig parses a shim configuration (JSON when its first
// non-space byte is '{', TOML otherwise) strictly: unknown keys, wrong
// types, trailing data and bad values are errors. name is the file's name
// for messages.
func ParseShimConfig(name string, b []byte) (VMOptions, error) {
	if len(b) > MaxShimConfig {
		return VMOptions{}, fmt.Errorf("shim: configuration %s: %d bytes, more than %d", name, len(b), MaxShimConfig)
	}
	var c ShimConfig
	if t := bytes.TrimLeft(b, " \t\r\n"); len(t) > 0 && t[0] == '{' {
		d := json.NewDecoder(bytes.NewReader(b))
		d.DisallowUnknownFields()
		if err := d.Decode(&c); err != nil {
			return VMOptions{}, fmt.Errorf("shim: configuration %s (JSON): %w", name, err)
		}
		if _, err := d.Token(); !errors.Is(err, io.EOF) {
			return VMOptions{}, fmt.Errorf("shim: configuration %s (JSON): data after the object", name)
		}
	} else {
		md, err := toml.Decode(string(b), &c)
		if err != nil {
			return VMOptions{}, fmt.Errorf("shim: configuration %s (TOML): %w", name, err)
		}
		if u := md.Undecoded(); len(u) > 0 {
			var keys []string
			for _, k := range u {
				keys = append(keys, k.String())
			}
			slices.Sort(keys)
			return VMOptions{}, fmt.Errorf("shim: configuration %s: unknown keys %s (known: kernel, vcpus, memory, tee, kbs, kbs_ca, resource, sim_dir, rootfs, engine)",
				name, strings.Join(keys, ", "))
		}
	}
	if c.VCPUs < 0 {
		return VMOptions{}, fmt.Errorf("shim: configuration %s: vcpus %d: want 1 to 64", name, c.VCPUs)
	}
	o, err := ParseVMOptions(c.annotations())
	if err != nil {
		return VMOptions{}, fmt.Errorf("%w (configuration %s; the keys are the annotations' names without io.cvm., '-' as '_')", err, name)
	}
	return o, nil
}

// ParseRuntimeOptions reads a task's runtime options (CreateTaskRequest.
// Options): nil gives no settings; runtimeoptions.v1.Options gives its
// ConfigPath file (read here) or its ConfigBody; any other type is an
// error.
func ParseRuntimeOptions(a *anypb.Any) (VMOptions, error) {
	if a == nil || a.GetTypeUrl() == "" {
		return VMOptions{}, nil
	}
	var ro runtimeoptions.Options
	if !a.MessageIs(&ro) {
		return VMOptions{}, fmt.Errorf("shim: runtime options of type %s: want runtimeoptions.v1.Options (ConfigPath or an options table)", a.GetTypeUrl())
	}
	if err := a.UnmarshalTo(&ro); err != nil {
		return VMOptions{}, fmt.Errorf("shim: runtime options: %w", err)
	}
	switch {
	case ro.GetConfigPath() != "":
		f, err := os.Open(ro.GetConfigPath())
		if err != nil {
			return VMOptions{}, fmt.Errorf("shim: runtime options ConfigPath: %w", err)
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, MaxShimConfig+1))
		if err != nil {
			return VMOptions{}, fmt.Errorf("shim: runtime options ConfigPath %s: %w", ro.GetConfigPath(), err)
		}
		return ParseShimConfig(ro.GetConfigPath(), b)
	case len(ro.GetConfigBody()) > 0:
		return ParseShimConfig("(the runtime's options table)", ro.GetConfigBody())
	}
	return VMOptions{}, nil
}

// Merge returns o with every setting that over has overriding it.
func (o VMOptions) Merge(over VMOptions) VMOptions {
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	if over.VCPUs != 0 {
		o.VCPUs = over.VCPUs
	}
	if over.Memory != 0 {
		o.Memory = over.Memory
	}
	set(&o.Kernel, over.Kernel)
	if over.TEE != "" {
		o.TEE = over.TEE
	}
	if over.Format != "" {
		o.Format = over.Format
	}
	set(&o.Engine, over.Engine)
	set(&o.KBS, over.KBS)
	set(&o.KBSCA, over.KBSCA)
	set(&o.Resource, over.Resource)
	set(&o.SimDir, over.SimDir)
	return o
}
