package sim

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"io"
	"math/big"
	"time"

	"github.com/greatjail/cvm/attestation/sevsnp"
)

// marker is the subject serialNumber attribute of every sim certificate.
const marker = sevsnp.SimulatedMarker

// Certificate names, validity and URLs as AMD's Key Distribution Service
// issues them for Milan (KDS specification 57230; go-sev-guest verify
// checks C/L/ST/O/OU and the common names).
const (
	arkCommonName  = "ARK-" + Product
	askCommonName  = "SEV-" + Product
	vcekCommonName = "SEV-VCEK"
	// crlURL is the CRL distribution point AMD puts in the ARK and ASK.
	// go-sev-guest requires exactly this value; a sim CRL is never
	// published there, so revocation checks of a sim chain fail closed.
	crlURL     = "https://kdsintf.amd.com/vcek/v1/" + Product + "/crl"
	rootYears  = 25
	vcekYears  = 7
	serialBits = 127
)

// KDS certificate extension OIDs (1.3.6.1.4.1.3704.1.*).
var (
	oidStructVersion = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 1}
	oidProductName   = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 2}
	oidBlSPL         = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 3, 1}
	oidTeeSPL        = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 3, 2}
	oidSNPSPL        = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 3, 3}
	oidSPL4          = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 3, 4}
	oidSPL5          = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 3, 5}
	oidSPL6          = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 3, 6}
	oidSPL7          = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 3, 7}
	oidUcodeSPL      = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 3, 8}
	oidHWID          = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 4}
)

// X.520 attribute types, in the order AMD writes them.
var (
	oidOU           = asn1.ObjectIdentifier{2, 5, 4, 11}
	oidCountry      = asn1.ObjectIdentifier{2, 5, 4, 6}
	oidLocality     = asn1.ObjectIdentifier{2, 5, 4, 7}
	oidProvince     = asn1.ObjectIdentifier{2, 5, 4, 8}
	oidOrganization = asn1.ObjectIdentifier{2, 5, 4, 10}
	oidCommonName   = asn1.ObjectIdentifier{2, 5, 4, 3}
	oidSerialNumber = asn1.ObjectIdentifier{2, 5, 4, 5}
)

// amdName returns the DER subject AMD gives its certificates (one attribute
// per RDN, in AMD's order and string types: OU, C, L, ST, O, CN) followed
// by the sim marker as serialNumber.
func amdName(commonName string) ([]byte, error) {
	utf8 := func(s string) asn1.RawValue {
		return asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagUTF8String, Bytes: []byte(s)}
	}
	printable := func(s string) asn1.RawValue {
		return asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagPrintableString, Bytes: []byte(s)}
	}
	attrs := []pkix.AttributeTypeAndValue{
		{Type: oidOU, Value: utf8("Engineering")},
		{Type: oidCountry, Value: printable("US")},
		{Type: oidLocality, Value: utf8("Santa Clara")},
		{Type: oidProvince, Value: utf8("CA")},
		{Type: oidOrganization, Value: utf8("Advanced Micro Devices")},
		{Type: oidCommonName, Value: utf8(commonName)},
		{Type: oidSerialNumber, Value: printable(marker)},
	}
	var rdns pkix.RDNSequence
	for _, a := range attrs {
		rdns = append(rdns, pkix.RelativeDistinguishedNameSET{a})
	}
	return asn1.Marshal(rdns)
}

// serial returns a random positive certificate serial number from rand.
func serial(rand io.Reader) (*big.Int, error) {
	b := make([]byte, (serialBits+7)/8)
	if _, err := io.ReadFull(rand, b); err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	b[0] &= 0x7F
	b[0] |= 0x40 // never zero, always 16 bytes
	return new(big.Int).SetBytes(b), nil
}

// template returns the fields common to every sim certificate.
func template(rand io.Reader, commonName string, notBefore time.Time, years int) (*x509.Certificate, error) {
	name, err := amdName(commonName)
	if err != nil {
		return nil, fmt.Errorf("%s name: %w", commonName, err)
	}
	sn, err := serial(rand)
	if err != nil {
		return nil, fmt.Errorf("%s %w", commonName, err)
	}
	return &x509.Certificate{
		SerialNumber:       sn,
		RawSubject:         name,
		NotBefore:          notBefore,
		NotAfter:           notBefore.AddDate(years, 0, 0),
		SignatureAlgorithm: x509.SHA384WithRSAPSS,
	}, nil
}

// create signs tmpl with signer under parent and parses the result.
func create(rand io.Reader, tmpl, parent *x509.Certificate, pub any, signer *rsa.PrivateKey) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand, tmpl, parent, pub, signer)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// certifyARK returns the self-signed ARK certificate: a CA without path
// length limit, for certificate and CRL signing, with AMD's CRL link.
func certifyARK(rand io.Reader, key *rsa.PrivateKey, notBefore time.Time) (*x509.Certificate, error) {
	t, err := template(rand, arkCommonName, notBefore, rootYears)
	if err != nil {
		return nil, err
	}
	t.IsCA = true
	t.BasicConstraintsValid = true
	t.MaxPathLen = -1
	t.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	t.CRLDistributionPoints = []string{crlURL}
	c, err := create(rand, t, t, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("ark certificate: %w", err)
	}
	return c, nil
}

// certifyASK returns the ASK certificate signed by the ARK: a CA with path
// length 0, for certificate signing, with AMD's CRL link.
func certifyASK(rand io.Reader, ark *x509.Certificate, arkKey *rsa.PrivateKey, pub *rsa.PublicKey, notBefore time.Time) (*x509.Certificate, error) {
	t, err := template(rand, askCommonName, notBefore, rootYears)
	if err != nil {
		return nil, err
	}
	t.IsCA = true
	t.BasicConstraintsValid = true
	t.MaxPathLen = 0
	t.MaxPathLenZero = true
	t.KeyUsage = x509.KeyUsageCertSign
	t.CRLDistributionPoints = []string{crlURL}
	c, err := create(rand, t, ark, pub, arkKey)
	if err != nil {
		return nil, fmt.Errorf("ask certificate: %w", err)
	}
	return c, nil
}

// certifyVCEK returns the VCEK certificate signed by the ASK. Like AMD's,
// it has no extensions but the KDS ones (no key usage, no basic
// constraints, no authority key identifier).
func certifyVCEK(rand io.Reader, ask *x509.Certificate, askKey *rsa.PrivateKey, pub *ecdsa.PublicKey, chipID [chipIDSize]byte, tcb tcbVersion, notBefore time.Time) (*x509.Certificate, error) {
	t, err := template(rand, vcekCommonName, notBefore, vcekYears)
	if err != nil {
		return nil, err
	}
	if t.ExtraExtensions, err = vcekExtensions(chipID, tcb); err != nil {
		return nil, err
	}
	// Without a SubjectKeyId in the parent, x509 writes no
	// AuthorityKeyId, as in AMD's VCEKs.
	parent := *ask
	parent.SubjectKeyId = nil
	c, err := create(rand, t, &parent, pub, askKey)
	if err != nil {
		return nil, fmt.Errorf("vcek certificate: %w", err)
	}
	return c, nil
}

// vcekExtensions returns the KDS extensions of a VCEK for chipID and tcb,
// in AMD's order and encoding: INTEGER structVersion 0, IA5String
// productName, INTEGER SPLs, and the hwID as 64 raw bytes without an ASN.1
// tag, as the KDS writes it.
func vcekExtensions(chipID [chipIDSize]byte, tcb tcbVersion) ([]pkix.Extension, error) {
	if !tcb.valid() {
		return nil, fmt.Errorf("vcek extensions: tcb %+v out of range (spls other than microcode must be 0-127)", tcb)
	}
	name, err := asn1.MarshalWithParams(productName, "ia5")
	if err != nil {
		return nil, fmt.Errorf("vcek extensions: %w", err)
	}
	exts := []pkix.Extension{{Id: oidStructVersion}, {Id: oidProductName, Value: name}}
	for _, e := range []struct {
		oid asn1.ObjectIdentifier
		v   uint8
	}{
		{oidBlSPL, tcb.Bootloader},
		{oidTeeSPL, tcb.TEE},
		{oidSPL4, 0},
		{oidSPL5, 0},
		{oidSPL6, 0},
		{oidSPL7, 0},
		{oidSNPSPL, tcb.SNP},
		{oidUcodeSPL, tcb.Microcode},
	} {
		v, err := asn1.Marshal(int(e.v))
		if err != nil {
			return nil, fmt.Errorf("vcek extensions: %w", err)
		}
		exts = append(exts, pkix.Extension{Id: e.oid, Value: v})
	}
	if exts[0].Value, err = asn1.Marshal(0); err != nil {
		return nil, fmt.Errorf("vcek extensions: %w", err)
	}
	return append(exts, pkix.Extension{Id: oidHWID, Value: clone(chipID[:])}), nil
}
