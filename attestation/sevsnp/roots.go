package sevsnp

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/google/go-sev-guest/verify/trust"
)

// SimulatedMarker is the subject serialNumber attribute value every
// certificate of a simulated-TEE chain carries. A verifier that is not
// explicitly simulated refuses any certificate bearing it, and a simulated
// verifier trusts only roots bearing it.
const SimulatedMarker = "cvm-simulated-tee"

// productLines are the SEV-SNP product lines this package knows, in the
// order AMD released them.
var productLines = []string{"Milan", "Genoa", "Turin"}

// Roots are trusted AMD root chains per product line ("Milan", "Genoa",
// "Turin"): for each line one or more ARKs, each with the ASK that
// certifies VCEKs and/or the ASVK that certifies VLEKs. A Roots is
// immutable once built and safe for concurrent use.
type Roots struct {
	// chains maps a product line to its trusted chains.
	chains map[string][]*rootChain
}

// rootChain is one trusted ARK with the intermediates it signed. At least
// one of ask and asvk is set.
type rootChain struct {
	line string
	ark  *x509.Certificate
	ask  *x509.Certificate // certifies VCEKs
	asvk *x509.Certificate // certifies VLEKs
}

// intermediate returns the chain's key that certifies endorsement keys of
// the given kind, or nil.
func (c *rootChain) intermediate(k keyKind) *x509.Certificate {
	if k == vlekKind {
		return c.asvk
	}
	return c.ask
}

var pinnedRoots = sync.OnceValue(func() *Roots {
	r, err := ParseRoots(
		trust.AskArkMilanVcekBytes, trust.AskArkMilanVlekBytes,
		trust.AskArkGenoaVcekBytes, trust.AskArkGenoaVlekBytes,
		trust.AskArkTurinVcekBytes, trust.AskArkTurinVlekBytes,
	)
	if err != nil {
		panic("sevsnp: embedded AMD roots do not parse: " + err.Error())
	}
	return r
})

// PinnedRoots returns AMD's real ARK, ASK and ASVK for Milan, Genoa and
// Turin, as published by AMD's KDS (cert_chain endpoints) and embedded in
// go-sev-guest v0.15.0 (trust.AskArk*Bytes, VCEK and VLEK bundles).
func PinnedRoots() *Roots { return pinnedRoots() }

// ParseRoots builds Roots from ARK + ASK (and/or ASVK) certificates. Each
// argument is either one DER certificate or PEM text holding any number of
// certificates, such as a KDS cert_chain bundle. A certificate's role and
// product line come from its subject common name: "ARK-Milan",
// "SEV-Milan" (ASK), "SEV-VLEK-Milan" (ASVK). Every ARK must be
// self-signed and certify at least one given ASK or ASVK; every ASK and
// ASVK must be signed by a given ARK of its product line.
//
// ParseRoots checks structure and signatures, not validity periods: those
// are checked against the verifier's clock on every verification.
func ParseRoots(pemOrDER ...[]byte) (*Roots, error) {
	var certs []*x509.Certificate
	for i, b := range pemOrDER {
		cs, err := parseCertificates(b)
		if err != nil {
			return nil, fmt.Errorf("sevsnp: roots argument %d: %w", i, err)
		}
		for _, c := range cs {
			if !slices.ContainsFunc(certs, func(d *x509.Certificate) bool { return d.Equal(c) }) {
				certs = append(certs, c)
			}
		}
	}
	if len(certs) == 0 {
		return nil, errors.New("sevsnp: no root certificates given")
	}

	var arks, intermediates []*x509.Certificate
	for _, c := range certs {
		role, _, ok := rootRole(c)
		if !ok {
			return nil, fmt.Errorf("sevsnp: certificate %q is not an AMD ARK, ASK or ASVK (want subject CN ARK-<line>, SEV-<line> or SEV-VLEK-<line> with line one of %s)",
				c.Subject.CommonName, strings.Join(productLines, ", "))
		}
		if _, isRSA := c.PublicKey.(*rsa.PublicKey); !isRSA {
			return nil, fmt.Errorf("sevsnp: %s has a %T key, want RSA", c.Subject.CommonName, c.PublicKey)
		}
		if role == roleARK {
			if !bytes.Equal(c.RawIssuer, c.RawSubject) {
				return nil, fmt.Errorf("sevsnp: %s is not self-issued (issuer %q)", c.Subject.CommonName, c.Issuer.CommonName)
			}
			if err := c.CheckSignatureFrom(c); err != nil {
				return nil, fmt.Errorf("sevsnp: %s is not self-signed: %w", c.Subject.CommonName, err)
			}
			arks = append(arks, c)
			continue
		}
		intermediates = append(intermediates, c)
	}

	r := &Roots{chains: map[string][]*rootChain{}}
	used := map[*x509.Certificate]bool{}
	for _, ic := range intermediates {
		role, line, _ := rootRole(ic)
		ark := issuingARK(ic, arks, line)
		if ark == nil {
			return nil, fmt.Errorf("sevsnp: %s has no ARK-%s among the given certificates that signed it", ic.Subject.CommonName, line)
		}
		used[ark] = true
		r.add(line, ark, role, ic)
	}
	for _, ark := range arks {
		if !used[ark] {
			return nil, fmt.Errorf("sevsnp: %s is given without an ASK or ASVK it signed", ark.Subject.CommonName)
		}
	}
	return r, nil
}

// issuingARK returns the ARK of line that issued and signed c, or nil.
func issuingARK(c *x509.Certificate, arks []*x509.Certificate, line string) *x509.Certificate {
	for _, ark := range arks {
		if _, l, _ := rootRole(ark); l != line {
			continue
		}
		if bytes.Equal(c.RawIssuer, ark.RawSubject) && c.CheckSignatureFrom(ark) == nil {
			return ark
		}
	}
	return nil
}

// add records intermediate ic (an ASK or ASVK) under ark, reusing a chain
// of the same ARK that has no intermediate of that kind yet.
func (r *Roots) add(line string, ark *x509.Certificate, role string, ic *x509.Certificate) {
	for _, c := range r.chains[line] {
		if !c.ark.Equal(ark) {
			continue
		}
		if role == roleASK && c.ask == nil {
			c.ask = ic
			return
		}
		if role == roleASVK && c.asvk == nil {
			c.asvk = ic
			return
		}
	}
	c := &rootChain{line: line, ark: ark}
	if role == roleASK {
		c.ask = ic
	} else {
		c.asvk = ic
	}
	r.chains[line] = append(r.chains[line], c)
}

// Products returns the product lines r has trusted chains for, in release
// order (Milan, Genoa, Turin).
func (r *Roots) Products() []string {
	var out []string
	for _, l := range productLines {
		if len(r.chains[l]) > 0 {
			out = append(out, l)
		}
	}
	return out
}

// certificates returns every certificate of r.
func (r *Roots) certificates() []*x509.Certificate {
	var out []*x509.Certificate
	for _, l := range productLines {
		for _, c := range r.chains[l] {
			for _, x := range []*x509.Certificate{c.ark, c.ask, c.asvk} {
				if x != nil {
					out = append(out, x)
				}
			}
		}
	}
	return out
}

// Certificate roles, by subject common name.
const (
	roleARK  = "ARK"
	roleASK  = "ASK"
	roleASVK = "ASVK"
)

// rootRole classifies an AMD root or intermediate certificate by its
// subject common name.
func rootRole(c *x509.Certificate) (role, line string, ok bool) {
	cn := c.Subject.CommonName
	switch {
	case strings.HasPrefix(cn, "ARK-"):
		role, line = roleARK, strings.TrimPrefix(cn, "ARK-")
	case strings.HasPrefix(cn, "SEV-VLEK-"):
		role, line = roleASVK, strings.TrimPrefix(cn, "SEV-VLEK-")
	case strings.HasPrefix(cn, "SEV-"):
		role, line = roleASK, strings.TrimPrefix(cn, "SEV-")
	default:
		return "", "", false
	}
	return role, line, slices.Contains(productLines, line)
}

// oidSerialNumber is the X.520 serialNumber attribute type.
var oidSerialNumber = asn1.ObjectIdentifier{2, 5, 4, 5}

// simulated reports whether c's subject carries SimulatedMarker in any
// serialNumber attribute.
func simulated(c *x509.Certificate) bool {
	for _, n := range c.Subject.Names {
		if n.Type.Equal(oidSerialNumber) && n.Value == SimulatedMarker {
			return true
		}
	}
	return false
}

// parseCertificates decodes PEM text with one or more CERTIFICATE blocks,
// or a single DER certificate.
func parseCertificates(b []byte) ([]*x509.Certificate, error) {
	trimmed := bytes.TrimSpace(b)
	if !bytes.HasPrefix(trimmed, []byte("-----BEGIN")) {
		c, err := x509.ParseCertificate(b)
		if err != nil {
			return nil, fmt.Errorf("not PEM, and not a DER certificate: %w", err)
		}
		return []*x509.Certificate{c}, nil
	}
	var out []*x509.Certificate
	rest := trimmed
	for len(bytes.TrimSpace(rest)) > 0 {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			return nil, errors.New("trailing data after the last PEM block")
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %q, want CERTIFICATE", blk.Type)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM certificate %d: %w", len(out), err)
		}
		out = append(out, c)
	}
	return out, nil
}
