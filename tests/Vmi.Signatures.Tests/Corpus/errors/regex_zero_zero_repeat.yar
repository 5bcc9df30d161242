/* Error case: x{0,0} is a bad repeat interval (yara 4.2.3 rejects this file; so must we). */
rule a { strings: $x = /ab{0,0}c/ condition: $x }
