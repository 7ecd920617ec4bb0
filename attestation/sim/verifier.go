package sim

import (
	"time"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/attestation/sevsnp"
)

// NewVerifier returns the SEV-SNP verifier in simulated mode, trusting only
// the sim root rootPEM (ARK and ASK, as RootPEM returns them) at the times
// now returns: claims always say tee "sim", whether the evidence is labelled
// "sim" or "snp" (a guest cannot tell a simulated PSP from a real one).
// It refuses a root that is not a sim root: every certificate must carry
// the sim marker, so AMD's real roots can never be configured here.
func NewVerifier(rootPEM []byte, now func() time.Time) (attestation.Verifier, error) {
	certs, err := parseCertsPEM(rootPEM)
	if err != nil {
		return nil, attestation.Errorf(attestation.TEESim, "simulated root", attestation.ErrMalformed, "root PEM: %v", err)
	}
	if len(certs) == 0 {
		return nil, attestation.Errorf(attestation.TEESim, "simulated root", attestation.ErrMissing, "root PEM holds no certificate")
	}
	for _, c := range certs {
		if c.Subject.SerialNumber != marker {
			return nil, attestation.Errorf(attestation.TEESim, "simulated root", attestation.ErrChain,
				"certificate %q is not a simulated-TEE certificate (subject serialNumber %q, want %q); refusing to trust it as a sim root",
				c.Subject.CommonName, c.Subject.SerialNumber, marker)
		}
	}
	roots, err := sevsnp.ParseRoots(rootPEM)
	if err != nil {
		return nil, attestation.Wrap(attestation.TEESim, "simulated root", attestation.ErrChain, err)
	}
	return sevsnp.New(sevsnp.Options{Roots: roots, Simulated: true, Now: now})
}
