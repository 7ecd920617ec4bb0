package tdxmeasure

// Internals the external tests check against the vectors' intermediates.
var (
	Locate         = locate
	ReadSections   = readSections
	AppendPageAdd  = appendPageAdd
	AppendMRExtend = appendMRExtend
)

// MeasureCounts measures secs of fw and returns the digest with the number
// of PAGE.ADD and MR.EXTEND records hashed.
func MeasureCounts(fw []byte, secs []Section) (sum [48]byte, pageAdds, extends int) {
	m := newMeasurer()
	m.sections(fw, secs)
	return m.sum(), m.pageAdds, m.extends
}
