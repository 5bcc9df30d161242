/* Error case: syntax error (rule body not closed) (yara 4.2.3 rejects this file; so must we). */
rule a { condition: true
