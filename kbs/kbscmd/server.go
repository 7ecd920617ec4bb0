package kbscmd

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/greatjail/cvm/kbs"
	"github.com/greatjail/cvm/kbs/config"
	"github.com/greatjail/cvm/kbs/resources"
	"github.com/greatjail/cvm/kbs/store/boltstore"
)

// InitOptions are the inputs of `cvm-kbs init`.
type InitOptions struct {
	Dir     string
	Listen  string
	SimRoot string
	Out     io.Writer
}

// Init creates a broker's CA, certificates, keys and configuration in Dir.
func Init(o InitOptions) error {
	if o.Dir == "" {
		return fmt.Errorf("%w: --dir is required", ErrUsage)
	}
	created, err := config.Init(o.Dir, config.InitOptions{Listen: o.Listen, SimRoot: o.SimRoot, Now: time.Now(), Rand: rand.Reader})
	if err != nil {
		return err
	}
	for _, f := range created {
		fmt.Fprintln(o.Out, f)
	}
	fmt.Fprintf(o.Out, "\nstart the broker:  cvm-kbs serve --config %s/%s\nadminister it:     cvm kbs --admin-config %s/%s resource list\n", o.Dir, config.FileServer, o.Dir, config.FileAdmin)
	return nil
}

// Serve runs the broker configured in configPath until ctx ends.
func Serve(ctx context.Context, configPath string, logOut io.Writer, ready kbs.Ready) error {
	if configPath == "" {
		return fmt.Errorf("%w: --config is required (the kbs.yaml written by 'cvm-kbs init')", ErrUsage)
	}
	cfg, err := config.LoadServer(configPath)
	if err != nil {
		return fmt.Errorf("%w: --config: %w", ErrUsage, err)
	}
	log := slog.New(slog.NewTextHandler(logOut, nil))
	return kbs.Run(ctx, cfg, log, ready)
}

// RotateKEK re-encrypts every resource version that is not under the
// current (first) KEK of configPath. The broker must be stopped: the store
// file is locked by a running broker.
func RotateKEK(ctx context.Context, configPath string, out io.Writer) error {
	if configPath == "" {
		return fmt.Errorf("%w: --config is required", ErrUsage)
	}
	cfg, err := config.LoadServer(configPath)
	if err != nil {
		return fmt.Errorf("%w: --config: %w", ErrUsage, err)
	}
	mat, err := cfg.LoadMaterial()
	if err != nil {
		return err
	}
	st, err := boltstore.Open(cfg.Store, boltstore.Options{})
	if errors.Is(err, boltstore.ErrLocked) {
		return fmt.Errorf("%w (stop the broker before rotating: the store is in use)", err)
	}
	if err != nil {
		return err
	}
	defer st.Close()
	var keks []*resources.KEK
	for _, b := range mat.KEKs {
		k, err := resources.LoadKEK(b)
		if err != nil {
			return err
		}
		keks = append(keks, k)
	}
	rs, err := resources.New(st, keks, rand.Reader, time.Now)
	if err != nil {
		return err
	}
	n, err := rs.Rotate(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "re-encrypted %d resource version(s) under KEK %s\n", n, keks[0].ID())
	return nil
}
