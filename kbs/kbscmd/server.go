package kbscmd

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/greatjail/cvm/kbs"
	"github.com/greatjail/cvm/kbs/config"
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
