package tdxmeasure

// AuthenticodeHash is authenticode with any hash, to compare with
// signatures made with SHA-256.
var AuthenticodeHash = authenticode
