/* Error case: nocase is not allowed on hex strings (yara 4.2.3 rejects this file; so must we). */
rule a { strings: $x = { 41 42 } nocase condition: $x }
