/* Error case: invalid repeat range (yara 4.2.3 rejects this file; so must we). */
rule a { strings: $x = /ab{5,2}/ condition: $x }
