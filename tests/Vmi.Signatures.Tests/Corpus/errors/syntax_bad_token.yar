/* Error case: syntax error (unexpected token) (yara 4.2.3 rejects this file; so must we). */
rule a { condition: true and and false }
