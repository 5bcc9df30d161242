/* Error case: xor is not allowed on regular expressions (yara 4.2.3 rejects this file; so must we). */
rule a { strings: $x = /abc/ xor condition: $x }
